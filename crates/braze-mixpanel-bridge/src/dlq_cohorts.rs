//! `dlq --cohorts`: the cohort import's dead letters, the membership
//! changes Braze refused (or that failed for longer than the writer's
//! limits): `list`, `show`, `replay` (back into the journal, as the
//! cohort's current state for that user) and `purge`, with the same output
//! whichever store keeps the cohort state.
//!
//! With the SQLite spool it opens the cohort store in the data directory
//! with its own connection ([`SqliteStore`]), so it works beside a running
//! `serve`. With NATS it connects as `serve` does and opens the key-value
//! buckets ([`NatsStore`]), once they exist (`serve` creates them; nothing
//! is created here).

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use bridge_server::cohorts::store_path;
use bridge_server::config::{SpoolBackend, SpoolOnly};
use bridge_server::nats::NatsOptions;
use cohort_import::braze::BrazeUser;
use cohort_import::store::StoreError;
use cohort_import::store::nats::{BucketState, NatsStore};
use cohort_import::store::sqlite::{CohortDeadLetter, DeadLetterSelection, SqliteStore};
use serde_json::{Value, json};

use crate::dlq_cmd::{
    DETAIL_WIDTH, DlqCommand, FilterArgs, REPLAY_ALL_NEEDS_YES, Selection, format_time, runtime,
    shorten, usage, write_table, write_usage,
};

/// The cohort state's dead-letter administration, in either store.
pub(crate) enum CohortStore {
    /// The SQLite cohort store in the data directory.
    Sqlite(SqliteStore),
    /// The NATS key-value buckets.
    Nats(NatsStore),
}

impl CohortStore {
    async fn dead_letters(
        &self,
        selection: &DeadLetterSelection,
        limit: usize,
    ) -> Result<Vec<CohortDeadLetter>, StoreError> {
        match self {
            CohortStore::Sqlite(store) => store.dead_letters(selection, limit),
            CohortStore::Nats(store) => store.dead_letters(selection, limit).await,
        }
    }

    async fn replay(&self, selection: &DeadLetterSelection) -> Result<u64, StoreError> {
        match self {
            CohortStore::Sqlite(store) => store.replay_dead_letters(selection),
            CohortStore::Nats(store) => store.replay_dead_letters(selection).await,
        }
    }

    async fn purge(&self, selection: &DeadLetterSelection) -> Result<u64, StoreError> {
        match self {
            CohortStore::Sqlite(store) => store.purge_dead_letters(selection),
            CohortStore::Nats(store) => store.purge_dead_letters(selection).await,
        }
    }
}

pub(crate) fn run(command: DlqCommand, spool: &SpoolOnly) -> anyhow::Result<ExitCode> {
    if let DlqCommand::List { filter, .. }
    | DlqCommand::Replay(Selection { filter, .. })
    | DlqCommand::Purge(Selection { filter, .. }) = &command
    {
        selection(filter, Vec::new())?;
    }
    if let DlqCommand::Replay(Selection { filter, ids, yes }) = &command
        && !yes
        && selection(filter, ids.clone())? == DeadLetterSelection::default()
    {
        return usage(REPLAY_ALL_NEEDS_YES);
    }
    let runtime = runtime()?;
    let code = runtime.block_on(async {
        let store = match &spool.backend {
            SpoolBackend::Sqlite => CohortStore::Sqlite(open_sqlite(&spool.data_dir)?),
            SpoolBackend::Nats(options) => CohortStore::Nats(open_nats(options).await?),
        };
        execute(&store, command, &mut io::stdout(), &mut io::stderr()).await
    })?;
    Ok(ExitCode::from(code))
}

fn open_sqlite(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    let path = store_path(data_dir);
    if !path.is_file() {
        anyhow::bail!(
            "no cohort store at {}: is the data dir right, and has the cohort import run?",
            path.display()
        );
    }
    SqliteStore::open(&path)
        .with_context(|| format!("cannot open the cohort store at {}", path.display()))
}

/// The cohort state in the NATS key-value buckets `options` name: connects,
/// checks that `serve` has created every bucket, and opens them. Creates
/// nothing.
pub(crate) async fn open_nats(options: &NatsOptions) -> anyhow::Result<NatsStore> {
    let client = bridge_server::nats::connect(options).await?;
    let jetstream = async_nats::jetstream::new(client);
    let checks = NatsStore::check(&jetstream, &options.kv_bucket_prefix, options.replicas)
        .await
        .context("cannot read the cohort state's NATS key-value buckets")?;
    let missing: Vec<&str> = checks
        .iter()
        .filter(|check| check.state == BucketState::Missing)
        .map(|check| check.name.as_str())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "the cohort state has no NATS key-value bucket {} yet: `serve` creates them when it runs the cohort import on NATS (or check nats.kv_bucket_prefix)",
            missing.join(", ")
        );
    }
    NatsStore::open(jetstream, &options.kv_bucket_prefix, options.replicas)
        .await
        .context("cannot open the cohort state's NATS key-value buckets")
}

/// Runs `command` on `store`, writing what it shows to `out` and counts,
/// notes and usage errors to `err`; returns the exit code. The same for
/// both stores, so that the output is the same.
pub(crate) async fn execute(
    store: &CohortStore,
    command: DlqCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<u8> {
    match command {
        DlqCommand::List {
            filter,
            limit,
            json,
        } => {
            let selection = selection(&filter, Vec::new())?;
            let letters = store.dead_letters(&selection, limit).await?;
            if json {
                for letter in &letters {
                    serde_json::to_writer(&mut *out, &letter_json(letter))?;
                    out.write_all(b"\n")?;
                }
                out.flush()?;
                writeln!(err, "{} shown", letters.len())?;
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = letters
                .iter()
                .map(|letter| {
                    vec![
                        letter.id.to_string(),
                        format_time(letter.at_ms, false),
                        letter.reason.clone(),
                        letter.cohort.to_string(),
                        letter.op.as_str().to_owned(),
                        user_text(&letter.user),
                        letter.attempts.to_string(),
                        shorten(&letter.detail, DETAIL_WIDTH),
                    ]
                })
                .collect();
            write_table(
                out,
                &[
                    "ID", "TIME", "REASON", "COHORT", "CHANGE", "USER", "ATTEMPTS", "DETAIL",
                ],
                &rows,
            )?;
            writeln!(out, "{} shown", letters.len())?;
            out.flush()?;
            Ok(0)
        }
        DlqCommand::Show { ids } => {
            let selection = DeadLetterSelection {
                ids: ids.clone(),
                ..DeadLetterSelection::default()
            };
            let letters = store.dead_letters(&selection, usize::MAX).await?;
            for letter in &letters {
                serde_json::to_writer_pretty(&mut *out, &letter_json(letter))?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            let n_missing = ids.len() - letters.len();
            if n_missing > 0 {
                writeln!(
                    err,
                    "braze-mixpanel-bridge: {n_missing} id(s) name no cohort dead letter"
                )?;
                return Ok(1);
            }
            Ok(0)
        }
        DlqCommand::Replay(Selection { filter, ids, yes }) => {
            let selection = selection(&filter, ids)?;
            if !yes && selection == DeadLetterSelection::default() {
                return write_usage(err, REPLAY_ALL_NEEDS_YES);
            }
            let replayed = store.replay(&selection).await?;
            writeln!(out, "replayed {replayed} change(s) into the cohort journal")?;
            out.flush()?;
            Ok(0)
        }
        DlqCommand::Purge(Selection { filter, ids, yes }) => {
            let selection = selection(&filter, ids)?;
            if !yes {
                let n_matching = store.dead_letters(&selection, usize::MAX).await?.len();
                return write_usage(
                    err,
                    &format!(
                        "purging deletes {n_matching} matching entry(ies) for good: pass --yes"
                    ),
                );
            }
            let n_purged = store.purge(&selection).await?;
            writeln!(out, "purged {n_purged} entry(ies)")?;
            out.flush()?;
            Ok(0)
        }
    }
}

fn selection(filter: &FilterArgs, ids: Vec<i64>) -> anyhow::Result<DeadLetterSelection> {
    if filter.event_type.is_some() {
        anyhow::bail!("--event-type filters the spool's dead letters; use --cohort with --cohorts");
    }
    Ok(DeadLetterSelection {
        ids,
        reason: filter.reason.clone(),
        cohort_id: filter.cohort.clone(),
        since_ms: filter.since,
        until_ms: filter.until,
    })
}

fn user_text(user: &BrazeUser) -> String {
    match user {
        BrazeUser::ExternalId(id) => format!("external_id:{id}"),
        BrazeUser::Email(email) => format!("email:{email}"),
    }
}

fn letter_json(letter: &CohortDeadLetter) -> Value {
    let (id_kind, id) = match &letter.user {
        BrazeUser::ExternalId(id) => ("external_id", id),
        BrazeUser::Email(email) => ("email", email),
    };
    json!({
        "id": letter.id,
        "dead_lettered_at": format_time(letter.at_ms, true),
        "dead_lettered_at_ms": letter.at_ms,
        "reason": letter.reason,
        "detail": letter.detail,
        "project_id": letter.cohort.project_id,
        "cohort_id": letter.cohort.cohort_id,
        "cohort_name": letter.cohort_name,
        "change": letter.op.as_str(),
        id_kind: id,
        "attempts": letter.attempts,
    })
}
