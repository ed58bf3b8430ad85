//! `cohorts`: Mixpanel cohorts into Braze from the command line.
//!
//! - `list`: the project's cohorts in Mixpanel, with their sizes.
//! - `sync`: one pull of the cohorts through Mixpanel's Query API, diffed
//!   against the stored membership, then the journal drained to Braze. With
//!   `--dry-run`, the pull runs against a copy of the store and the Braze
//!   requests it would send are printed as NDJSON; nothing is changed.
//! - `status`: each cohort's members, last sync, pending changes, unmatched
//!   members and last error, from the store alone (no credentials needed):
//!   the SQLite file in the data dir, or on NATS the key-value buckets
//!   the replicas share.
//!
//! The configuration is the service's (`--config`, `BRIDGE_*`,
//! `MIXPANEL_*`, `BRAZE_*`), without the need for a Currents token.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bridge_server::cohorts::{AnyStore, destination, query_client, status_json, store_path};
use bridge_server::config::{self, CohortWriter, Config, Env, Flags, SpoolBackend, SpoolOnly};
use cohort_import::pull::pull_cohorts;
use cohort_import::stats::CohortStats;
use cohort_import::store::MembershipStore as _;
use cohort_import::store::sqlite::SqliteStore;
use cohort_import::writer::{Destination, Writer, WriterConfig};
use mixpanel_client::Client;

use crate::dlq_cmd::{format_time, shorten, write_table};

#[derive(clap::Args, Debug)]
pub(crate) struct CohortsArgs {
    /// TOML configuration file (else $BRIDGE_CONFIG).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Directory of the cohort store [env: BRIDGE_DATA_DIR] [default: ./bridge-data].
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: CohortsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum CohortsCommand {
    /// List the Mixpanel project's cohorts with their sizes (one Query API call).
    List {
        /// One JSON object per cohort (NDJSON).
        #[arg(long)]
        json: bool,
    },
    /// Pull cohorts from Mixpanel once and send the changes to Braze.
    Sync {
        /// Only this cohort id (repeatable); all of the project's otherwise.
        #[arg(long = "cohort", value_name = "ID")]
        cohorts: Vec<u64>,
        /// Print the Braze requests the sync would send (NDJSON on stdout)
        /// and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show each cohort's state: members, last sync, pending changes,
    /// unmatched members, last error.
    Status {
        /// One JSON object per cohort (NDJSON).
        #[arg(long)]
        json: bool,
        /// Also list up to N unmatched members of each cohort, with why.
        #[arg(long, value_name = "N")]
        unmatched: Option<usize>,
    },
}

pub(crate) fn run(args: CohortsArgs) -> anyhow::Result<ExitCode> {
    let flags = Flags {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        cohorts_only: true,
        ..Flags::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match args.command {
        CohortsCommand::List { json } => {
            let config = load(&flags, false)?;
            runtime.block_on(list(&config, json))
        }
        CohortsCommand::Sync { cohorts, dry_run } => {
            let config = load(&flags, dry_run)?;
            runtime.block_on(sync(&config, &cohorts, dry_run))
        }
        CohortsCommand::Status { json, unmatched } => {
            let spool = config::spool_only(&flags, &Env::from_process())
                .context("invalid configuration")?;
            runtime.block_on(status(&spool, json, unmatched))
        }
    }
}

fn load(flags: &Flags, dry_run: bool) -> anyhow::Result<Config> {
    let flags = Flags {
        dry_run: dry_run.then_some(true),
        ..flags.clone()
    };
    let config = Config::load(&flags, &Env::from_process()).context("invalid configuration")?;
    let mut stderr = io::stderr().lock();
    for warning in config.warnings() {
        writeln!(stderr, "braze-mixpanel-bridge: warning: {warning}")?;
    }
    Ok(config)
}

/// The default project's Mixpanel client, for the Query API.
fn mixpanel_client(config: &Config) -> anyhow::Result<Client> {
    query_client(config)
        .context("cannot set up the Mixpanel client")?
        .context(
            "the cohort commands read Mixpanel's Query API: set MIXPANEL_SERVICE_ACCOUNT_USERNAME, MIXPANEL_SERVICE_ACCOUNT_SECRET and MIXPANEL_PROJECT_ID",
        )
}

async fn list(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let client = mixpanel_client(config)?;
    let cohorts = client
        .list_cohorts()
        .await
        .context("cannot list Mixpanel's cohorts")?;
    let mut stdout = io::stdout().lock();
    if json {
        for cohort in &cohorts {
            let line = serde_json::json!({
                "id": cohort.id,
                "name": cohort.name,
                "count": cohort.count,
                "description": cohort.description,
                "is_visible": cohort.is_visible,
                "created": cohort.created,
            });
            serde_json::to_writer(&mut stdout, &line)?;
            stdout.write_all(b"\n")?;
        }
        stdout.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = cohorts
        .iter()
        .map(|cohort| {
            vec![
                cohort.id.to_string(),
                cohort
                    .count
                    .map_or_else(|| "-".to_owned(), |count| count.to_string()),
                shorten(&cohort.name, 60),
            ]
        })
        .collect();
    write_table(&mut stdout, &["ID", "MEMBERS", "NAME"], &rows)?;
    Ok(ExitCode::SUCCESS)
}

async fn sync(config: &Config, ids: &[u64], dry_run: bool) -> anyhow::Result<ExitCode> {
    let client = mixpanel_client(config)?;
    let path = store_path(&config.data_dir);
    let (store, destination, _copy) = if dry_run {
        if let SpoolBackend::Nats(_) = config.spool.backend {
            anyhow::bail!(
                "cohorts sync --dry-run works on a copy of the SQLite cohort store; with spool.backend = \"nats\" there is none to copy"
            );
        }
        // A copy, so that a dry run changes nothing, not even the journal.
        let copy = tempfile_path(&config.data_dir);
        let store = if path.is_file() {
            SqliteStore::open(&path)?.copy_to(&copy)?
        } else {
            SqliteStore::open(&copy)?
        };
        let stdout: Box<dyn Write + Send> = Box::new(io::stdout());
        let destination = match &config.cohorts.writer {
            CohortWriter::Attribute { attribute } => Destination::dry_run_to(stdout, attribute),
            CohortWriter::Partner { partner_name, .. } => {
                Destination::dry_run_partner_to(stdout, partner_name)
            }
        };
        (
            AnyStore::Sqlite(store),
            destination,
            Some(RemoveOnDrop(copy)),
        )
    } else {
        // On NATS, the replicas' shared state (and their writer lease).
        (
            AnyStore::open(config, None).await?,
            destination(config)?,
            None,
        )
    };
    let store = Arc::new(store);
    let stats = CohortStats::default();
    let identity = &config.cohorts.identity;
    let reports = pull_cohorts(&client, &*store, identity, ids, &stats)
        .await
        .context("cannot list Mixpanel's cohorts")?;
    let mut stderr = io::stderr().lock();
    let mut n_failed = 0;
    for report in &reports {
        match report {
            Ok(report) => writeln!(
                stderr,
                "cohort {} ({}): {} members in Mixpanel, {} added, {} removed, {} without a usable id",
                report.cohort.cohort_id,
                report.name,
                report.members_seen,
                report.added,
                report.removed,
                report.unmatched
            )?,
            Err((cohort, error)) => {
                n_failed += 1;
                writeln!(stderr, "cohort {}: {error}", cohort.cohort_id)?;
            }
        }
    }
    drop(stderr);
    let writer = Writer::new(store, destination, WriterConfig::default());
    let sent = writer.drain_once().await;
    let mut stderr = io::stderr().lock();
    match sent {
        Ok(report) => writeln!(
            stderr,
            "{} change(s) {} in {} request(s); {} dead-lettered",
            report.confirmed,
            if dry_run {
                "would be sent"
            } else {
                "sent to Braze"
            },
            report.requests,
            report.dead_lettered
        )?,
        Err(error) => {
            writeln!(
                stderr,
                "braze-mixpanel-bridge: {error}; the changes stay journaled for the next sync or serve"
            )?;
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(if n_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The store `status` reads: the SQLite file in the data dir, or the
/// NATS buckets the replicas share. Creates neither.
async fn open_for_status(spool: &SpoolOnly) -> anyhow::Result<AnyStore> {
    match &spool.backend {
        SpoolBackend::Sqlite => {
            let path = store_path(&spool.data_dir);
            if !path.is_file() {
                anyhow::bail!(
                    "no cohort store at {}: the cohort import has not run with this data dir",
                    path.display()
                );
            }
            Ok(AnyStore::Sqlite(SqliteStore::open(&path)?))
        }
        SpoolBackend::Nats(options) => Ok(AnyStore::Nats(
            crate::dlq_cohorts::open_nats(options).await?,
        )),
    }
}

async fn status(
    spool: &SpoolOnly,
    json: bool,
    unmatched: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let store = open_for_status(spool).await?;
    let cohorts = store.cohorts().await?;
    let mut stdout = io::stdout().lock();
    if json {
        for cohort in &cohorts {
            let mut line = status_json(cohort);
            if let Some(max) = unmatched {
                let members = store.unmatched(&cohort.cohort, max).await?;
                line["unmatched"] = members
                    .iter()
                    .map(|member| {
                        serde_json::json!({"distinct_id": member.distinct_id, "reason": member.reason.as_str()})
                    })
                    .collect();
            }
            serde_json::to_writer(&mut stdout, &line)?;
            stdout.write_all(b"\n")?;
        }
        stdout.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = cohorts
        .iter()
        .map(|cohort| {
            vec![
                cohort.cohort.to_string(),
                shorten(&cohort.name, 30),
                cohort.members.to_string(),
                cohort.pending.to_string(),
                cohort.unmatched.to_string(),
                cohort.dead_letters.to_string(),
                cohort
                    .last_sync_ms
                    .map_or_else(|| "-".to_owned(), |ms| format_time(ms, false)),
                cohort
                    .last_error
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |error| shorten(error, 60)),
            ]
        })
        .collect();
    write_table(
        &mut stdout,
        &[
            "COHORT",
            "NAME",
            "MEMBERS",
            "PENDING",
            "UNMATCHED",
            "DEAD",
            "LAST SYNC",
            "LAST ERROR",
        ],
        &rows,
    )?;
    if let Some(max) = unmatched {
        for cohort in &cohorts {
            for member in store.unmatched(&cohort.cohort, max).await? {
                writeln!(
                    stdout,
                    "unmatched {} {} {}",
                    cohort.cohort, member.reason, member.distinct_id
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A fresh path for the dry run's copy of the store, in the data dir.
fn tempfile_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("cohorts").join(format!(
        "dry-run-{}-{}.db",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos())
    ))
}

/// Removes the dry run's copy (and its WAL files) when the sync ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
