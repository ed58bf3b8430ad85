//! `dlq --cohorts`: the cohort import's dead letters, the membership
//! changes Braze refused (or that failed for longer than the writer's
//! limits): `list`, `show`, `replay` (back into the journal, as the
//! cohort's current state for that user) and `purge`. It opens the cohort
//! store with its own connection, so it works beside a running `serve`.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use bridge_server::cohorts::store_path;
use cohort_import::braze::BrazeUser;
use cohort_import::store::sqlite::{CohortDeadLetter, DeadLetterSelection, SqliteStore};
use serde_json::{Value, json};

use crate::dlq_cmd::{
    DETAIL_WIDTH, DlqCommand, FilterArgs, Selection, format_time, shorten, usage, write_table,
};

pub(crate) fn run(command: DlqCommand, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let path = store_path(data_dir);
    if !path.is_file() {
        anyhow::bail!(
            "no cohort store at {}: is the data dir right, and has the cohort import run?",
            path.display()
        );
    }
    let store = SqliteStore::open(&path)
        .with_context(|| format!("cannot open the cohort store at {}", path.display()))?;
    match command {
        DlqCommand::List {
            filter,
            limit,
            json,
        } => {
            let selection = selection(&filter, Vec::new())?;
            let letters = store.dead_letters(&selection, limit)?;
            let mut stdout = io::stdout().lock();
            if json {
                for letter in &letters {
                    serde_json::to_writer(&mut stdout, &letter_json(letter))?;
                    stdout.write_all(b"\n")?;
                }
                stdout.flush()?;
                writeln!(io::stderr().lock(), "{} shown", letters.len())?;
                return Ok(ExitCode::SUCCESS);
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
                &mut stdout,
                &[
                    "ID", "TIME", "REASON", "COHORT", "CHANGE", "USER", "ATTEMPTS", "DETAIL",
                ],
                &rows,
            )?;
            writeln!(stdout, "{} shown", letters.len())?;
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { ids } => {
            let selection = DeadLetterSelection {
                ids: ids.clone(),
                ..DeadLetterSelection::default()
            };
            let letters = store.dead_letters(&selection, usize::MAX)?;
            let mut stdout = io::stdout().lock();
            for letter in &letters {
                serde_json::to_writer_pretty(&mut stdout, &letter_json(letter))?;
                stdout.write_all(b"\n")?;
            }
            stdout.flush()?;
            let n_missing = ids.len() - letters.len();
            if n_missing > 0 {
                writeln!(
                    io::stderr().lock(),
                    "braze-mixpanel-bridge: {n_missing} id(s) name no cohort dead letter"
                )?;
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay(Selection { filter, ids, yes }) => {
            let selection = selection(&filter, ids)?;
            if !yes && selection == DeadLetterSelection::default() {
                return usage("replaying every entry needs --yes (or give a filter or --id)");
            }
            let replayed = store.replay_dead_letters(&selection)?;
            writeln!(
                io::stdout().lock(),
                "replayed {replayed} change(s) into the cohort journal"
            )?;
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Purge(Selection { filter, ids, yes }) => {
            let selection = selection(&filter, ids)?;
            if !yes {
                let n_matching = store.dead_letters(&selection, usize::MAX)?.len();
                return usage(&format!(
                    "purging deletes {n_matching} matching entry(ies) for good: pass --yes"
                ));
            }
            let n_purged = store.purge_dead_letters(&selection)?;
            writeln!(io::stdout().lock(), "purged {n_purged} entry(ies)")?;
            Ok(ExitCode::SUCCESS)
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
