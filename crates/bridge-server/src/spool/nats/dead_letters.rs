//! The dead letters of the NATS spool: list, show, count, replay and purge
//! them on the dead-letter stream, with the same operations and filter
//! meaning as the SQLite [`DeadLetterStore`](crate::spool::sqlite::DeadLetterStore)
//! ([`DeadLetterAdmin`]). An entry's id is its sequence in the dead-letter
//! stream.
//!
//! Reading goes through a short-lived ephemeral pull consumer (no acks,
//! memory storage, removed by the server a minute after its last use),
//! filtered on the reason's subject when the filter names a reason; the
//! other conditions are applied to each entry's headers. Entries given by
//! id are fetched one by one.
//!
//! Replay publishes each batch (one workspace, at most
//! [`REPLAY_MAX_EVENTS_PER_BATCH`] events; or a whole batch an
//! `archive_failed` letter holds, alone) to the batch stream, waits for
//! its PubAck, then deletes its entries. A replay cut short between the two
//! and run again within the batch stream's duplicate window stores the
//! batch once (its `Nats-Msg-Id` names its entries); later, the events go
//! twice, which Mixpanel deduplicates on `$insert_id`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{self, context::PublishErrorKind};
use futures_util::StreamExt as _;

use super::{dead_letter_prefix, is_not_found, is_stream_full, unix_ms, wire};
use crate::nats::{NatsError, NatsOptions, error_chain};
use crate::spool::{
    DeadLetter, DeadLetterAdmin, DeadLetterEntry, DeadLetterFilter, REPLAY_MAX_EVENTS_PER_BATCH,
    Replayed, SpoolError, is_json, is_whole_batch, n_events_in_batch, replay_body,
};

/// Entries read per request.
const ENTRIES_PER_FETCH: usize = 256;

/// Entries gathered before a replay publishes their batches.
const ENTRIES_PER_REPLAY_ROUND: usize = 5_000;

/// How long the server keeps a reading consumer nobody uses.
const READER_INACTIVE_THRESHOLD: Duration = Duration::from_secs(60);

/// The dead letters of a NATS spool.
pub struct NatsDeadLetterStore {
    api: jetstream::Context,
    publisher: jetstream::Context,
    options: NatsOptions,
    dead_letters: Stream,
}

impl std::fmt::Debug for NatsDeadLetterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsDeadLetterStore")
            .field("stream", &self.options.dead_letter_stream)
            .finish_non_exhaustive()
    }
}

impl NatsDeadLetterStore {
    /// Opens the dead letters of the spool `options` describe, on a
    /// connected `client`. Creates nothing: the streams are `serve`'s to
    /// create (a missing one is an error).
    pub async fn open(
        client: async_nats::Client,
        options: &NatsOptions,
    ) -> Result<NatsDeadLetterStore, NatsError> {
        super::check_options(options)?;
        let api = jetstream::ContextBuilder::new()
            .timeout(options.connect_timeout)
            .build(client.clone());
        let publisher = jetstream::ContextBuilder::new()
            .timeout(options.publish_timeout)
            .build(client);
        let dead_letters = api
            .get_stream(&options.dead_letter_stream)
            .await
            .map_err(|error| {
                if is_not_found(&error) {
                    NatsError::Invalid(format!(
                        "the dead-letter stream {} does not exist (serve creates it)",
                        options.dead_letter_stream
                    ))
                } else {
                    NatsError::JetStream {
                        what: format!("info of stream {}", options.dead_letter_stream),
                        reason: error_chain(&error),
                    }
                }
            })?;
        Ok(NatsDeadLetterStore::new(
            api,
            publisher,
            options.clone(),
            dead_letters,
        ))
    }

    pub(super) fn new(
        api: jetstream::Context,
        publisher: jetstream::Context,
        options: NatsOptions,
        dead_letters: Stream,
    ) -> NatsDeadLetterStore {
        NatsDeadLetterStore {
            api,
            publisher,
            options,
            dead_letters,
        }
    }

    /// Entries matching `filter`, oldest first, at most `limit`.
    pub async fn list(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, SpoolError> {
        let mut entries = Vec::new();
        if limit == 0 {
            return Ok(entries);
        }
        let mut reader = self.reader(filter).await?;
        while let Some(chunk) = reader.next_chunk().await? {
            for entry in chunk {
                if filter.matches(&entry) {
                    entries.push(entry);
                    if entries.len() == limit {
                        reader.finish().await;
                        return Ok(entries);
                    }
                }
            }
        }
        reader.finish().await;
        Ok(entries)
    }

    /// How many entries match `filter`.
    pub async fn count(&self, filter: &DeadLetterFilter) -> Result<u64, SpoolError> {
        if filter.is_everything() {
            let info = self
                .dead_letters
                .get_info()
                .await
                .map_err(|error| storage("dead-letter stream info", &error))?;
            return Ok(info.state.messages);
        }
        let mut n_matching = 0;
        let mut reader = self.reader(filter).await?;
        while let Some(chunk) = reader.next_chunk().await? {
            n_matching += chunk.iter().filter(|entry| filter.matches(entry)).count() as u64;
        }
        reader.finish().await;
        Ok(n_matching)
    }

    /// The entry `id`, if it is stored.
    pub async fn get(&self, id: i64) -> Result<Option<DeadLetterEntry>, SpoolError> {
        let Ok(sequence) = u64::try_from(id) else {
            return Ok(None);
        };
        if sequence == 0 {
            return Ok(None);
        }
        match self.dead_letters.get_raw_message(sequence).await {
            Ok(message) => Ok(Some(wire::decode_dead_letter(
                message.sequence,
                Some(&message.headers),
                message.payload,
                unix_ms(message.time.unix_timestamp_nanos()),
            ))),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(storage("dead-letter get", &error)),
        }
    }

    /// Moves the entries matching `filter` back into the batch stream as
    /// new batches (see the module doc), in rounds of 5,000 entries.
    pub async fn replay(&mut self, filter: &DeadLetterFilter) -> Result<Replayed, SpoolError> {
        let mut replayed = Replayed::default();
        let mut reader = self.reader(filter).await?;
        let mut round: Vec<DeadLetterEntry> = Vec::new();
        loop {
            let chunk = reader.next_chunk().await?;
            let at_end = chunk.is_none();
            for entry in chunk.into_iter().flatten() {
                if !filter.matches(&entry) {
                    continue;
                }
                if is_json(&entry.letter.event) {
                    round.push(entry);
                } else {
                    replayed.n_not_json += 1;
                }
            }
            if (at_end || round.len() >= ENTRIES_PER_REPLAY_ROUND)
                && let Err(error) = self
                    .replay_round(std::mem::take(&mut round), &mut replayed)
                    .await
            {
                reader.finish().await;
                return Err(error);
            }
            if at_end {
                break;
            }
        }
        reader.finish().await;
        if replayed.n_not_json != 0 {
            tracing::warn!(
                n_not_json = replayed.n_not_json,
                "Left dead letters whose event is not JSON in the store."
            );
        }
        tracing::info!(
            n_events = replayed.n_events,
            n_batches = replayed.n_batches,
            "Replayed dead letters into the spool."
        );
        Ok(replayed)
    }

    /// Stores letters that came in no batch (a backfill's refusals), one
    /// after another, each once its PubAck is back; returns how many. The
    /// same letter added again within the stream's duplicate window is
    /// stored once ([`wire::added_letter_msg_id`]).
    pub async fn add(&mut self, letters: &[DeadLetter]) -> Result<u64, SpoolError> {
        let now_ms = crate::clock::now_ms();
        let prefix = dead_letter_prefix(&self.options);
        for letter in letters {
            let msg_id = wire::added_letter_msg_id(letter);
            let headers = wire::dead_letter_headers(&msg_id, letter, None, now_ms);
            let subject = format!("{prefix}.{}", wire::token(Some(&letter.reason)));
            let stream = self.options.dead_letter_stream.clone();
            self.publish(
                &stream,
                "a dead letter",
                subject,
                headers,
                letter.event.clone(),
            )
            .await?;
        }
        Ok(letters.len() as u64)
    }

    /// Deletes the entries matching `filter`; returns how many.
    pub async fn purge(&mut self, filter: &DeadLetterFilter) -> Result<u64, SpoolError> {
        if filter.is_everything() {
            let purged = self
                .dead_letters
                .purge()
                .await
                .map_err(|error| storage("dead-letter purge", &error))?;
            tracing::info!(n_purged = purged.purged, "Purged dead letters.");
            return Ok(purged.purged);
        }
        let mut n_purged = 0;
        let mut reader = self.reader(filter).await?;
        while let Some(chunk) = reader.next_chunk().await? {
            for entry in chunk {
                if filter.matches(&entry) && self.delete(entry.id).await? {
                    n_purged += 1;
                }
            }
        }
        reader.finish().await;
        tracing::info!(n_purged, "Purged dead letters.");
        Ok(n_purged)
    }

    /// Publishes the batches of one round and deletes their entries: a
    /// whole-batch letter (`archive_failed`) as that batch, the others
    /// gathered by workspace.
    async fn replay_round(
        &self,
        entries: Vec<DeadLetterEntry>,
        replayed: &mut Replayed,
    ) -> Result<(), SpoolError> {
        // (entry ids, workspace, body, events) of each batch to publish.
        let mut batches: Vec<(Vec<i64>, Option<String>, bytes::Bytes, u64)> = Vec::new();
        let mut by_workspace: BTreeMap<Option<String>, Vec<DeadLetterEntry>> = BTreeMap::new();
        for entry in entries {
            if is_whole_batch(&entry.letter.reason) {
                let n_events = n_events_in_batch(&entry.letter.event);
                batches.push((
                    vec![entry.id],
                    entry.letter.workspace,
                    entry.letter.event,
                    n_events,
                ));
                continue;
            }
            by_workspace
                .entry(entry.letter.workspace.clone())
                .or_default()
                .push(entry);
        }
        for (workspace, entries) in by_workspace {
            for chunk in entries.chunks(REPLAY_MAX_EVENTS_PER_BATCH) {
                let ids: Vec<i64> = chunk.iter().map(|entry| entry.id).collect();
                let body = replay_body(chunk.iter().map(|entry| entry.letter.event.as_ref()));
                batches.push((ids, workspace.clone(), body, chunk.len() as u64));
            }
        }
        let now_ms = crate::clock::now_ms();
        for (ids, workspace, body, n_events) in batches {
            let msg_id = wire::replay_msg_id(&ids);
            let headers = wire::batch_headers(&msg_id, workspace.as_deref(), now_ms);
            let subject = format!(
                "{}.{}",
                self.options.subject_prefix,
                wire::token(workspace.as_deref())
            );
            self.publish(
                &self.options.stream,
                "a replayed batch",
                subject,
                headers,
                body,
            )
            .await?;
            for id in ids {
                self.delete(id).await?;
            }
            replayed.n_batches += 1;
            replayed.n_events += n_events;
        }
        Ok(())
    }

    /// Publishes a replayed batch to the batch stream and awaits its PubAck.
    /// Publishes one message to `stream` (a replayed batch to the batch
    /// stream, an added letter to the dead-letter stream) and awaits its
    /// PubAck; `what` names it in errors.
    async fn publish(
        &self,
        stream: &str,
        what: &str,
        subject: String,
        headers: async_nats::HeaderMap,
        body: bytes::Bytes,
    ) -> Result<(), SpoolError> {
        let n_bytes = body.len();
        let publish = async {
            self.publisher
                .publish_with_headers(subject, headers, body)
                .await?
                .await
        };
        let error = match tokio::time::timeout(self.options.publish_timeout, publish).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => {
                return Err(SpoolError::Storage(format!(
                    "NATS did not acknowledge {what} within {:?}",
                    self.options.publish_timeout
                )));
            }
        };
        if is_stream_full(&error) {
            return Err(SpoolError::Full {
                n_bytes: self
                    .api
                    .get_stream(stream)
                    .await
                    .map_or(self.options.max_bytes, |stream| {
                        stream.cached_info().state.bytes
                    }),
                max_bytes: self.options.max_bytes,
            });
        }
        if error.kind() == PublishErrorKind::MaxPayloadExceeded {
            return Err(SpoolError::Storage(format!(
                "{what} of {n_bytes} bytes exceeds the NATS server's max_payload"
            )));
        }
        Err(storage(&format!("publish of {what}"), &error))
    }

    /// Deletes the entry `id`; false when it was already gone.
    async fn delete(&self, id: i64) -> Result<bool, SpoolError> {
        let sequence = u64::try_from(id).unwrap_or_default();
        match self.dead_letters.delete_message(sequence).await {
            Ok(deleted) => Ok(deleted),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(storage("dead-letter delete", &error)),
        }
    }

    /// A reader of the entries `filter` may match, oldest first.
    async fn reader(&self, filter: &DeadLetterFilter) -> Result<Reader<'_>, SpoolError> {
        if !filter.ids.is_empty() {
            let mut ids = filter.ids.clone();
            ids.sort_unstable();
            ids.dedup();
            return Ok(Reader::Ids { store: self, ids });
        }
        let filter_subject = filter.reason.as_ref().map_or_else(String::new, |reason| {
            format!(
                "{}.{}",
                dead_letter_prefix(&self.options),
                wire::token(Some(reason))
            )
        });
        let consumer: PullConsumer = self
            .dead_letters
            .create_consumer(PullConfig {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                filter_subject,
                inactive_threshold: READER_INACTIVE_THRESHOLD,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|error| storage("dead-letter reader creation", &error))?;
        Ok(Reader::Consumer {
            store: self,
            consumer: Some(Box::new(consumer)),
        })
    }
}

/// Reads entries in chunks: by id, or through an ephemeral consumer.
enum Reader<'a> {
    Ids {
        store: &'a NatsDeadLetterStore,
        ids: Vec<i64>,
    },
    Consumer {
        store: &'a NatsDeadLetterStore,
        /// `None` once every entry was read (boxed: a consumer handle is
        /// large).
        consumer: Option<Box<PullConsumer>>,
    },
}

impl Reader<'_> {
    /// The next entries (not yet filtered), or `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Vec<DeadLetterEntry>>, SpoolError> {
        match self {
            Reader::Ids { store, ids } => {
                let mut chunk = Vec::new();
                for id in ids.drain(..ids.len().min(ENTRIES_PER_FETCH)) {
                    chunk.extend(store.get(id).await?);
                }
                Ok((!chunk.is_empty() || !ids.is_empty()).then_some(chunk))
            }
            Reader::Consumer { store, consumer } => {
                let Some(reader) = consumer.as_ref() else {
                    return Ok(None);
                };
                let timeout = store.options.connect_timeout;
                let fetch = reader.fetch().max_messages(ENTRIES_PER_FETCH).messages();
                let mut messages = tokio::time::timeout(timeout, fetch)
                    .await
                    .map_err(|_| not_answered("dead-letter read", timeout))?
                    .map_err(|error| storage("dead-letter read", &error))?;
                let mut chunk = Vec::new();
                let mut n_pending = None;
                loop {
                    let next = tokio::time::timeout(timeout, messages.next())
                        .await
                        .map_err(|_| not_answered("dead-letter read", timeout))?;
                    let message = match next {
                        None => break,
                        Some(Ok(message)) => message,
                        Some(Err(error)) => {
                            return Err(storage("dead-letter read", error.as_ref()));
                        }
                    };
                    let Ok(info) = message.info() else {
                        continue;
                    };
                    let (sequence, published_ms) = (
                        info.stream_sequence,
                        unix_ms(info.published.unix_timestamp_nanos()),
                    );
                    n_pending = Some(info.pending);
                    chunk.push(wire::decode_dead_letter(
                        sequence,
                        message.headers.as_ref(),
                        message.payload.clone(),
                        published_ms,
                    ));
                }
                // The last message says how many are left after it; an empty
                // fetch means none matched at all.
                if chunk.is_empty() || n_pending == Some(0) {
                    self.finish().await;
                }
                Ok((!chunk.is_empty()).then_some(chunk))
            }
        }
    }

    /// Removes the reading consumer (the server would after a minute).
    async fn finish(&mut self) {
        if let Reader::Consumer { store, consumer } = self
            && let Some(consumer) = consumer.take()
        {
            let name = consumer.cached_info().name.clone();
            if let Err(error) = store.dead_letters.delete_consumer(&name).await {
                tracing::debug!(error = %error, "Could not remove a dead-letter reader; the server will.");
            }
        }
    }
}

impl DeadLetterAdmin for NatsDeadLetterStore {
    async fn list(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, SpoolError> {
        NatsDeadLetterStore::list(self, filter, limit).await
    }

    async fn count(&self, filter: &DeadLetterFilter) -> Result<u64, SpoolError> {
        NatsDeadLetterStore::count(self, filter).await
    }

    async fn get(&self, id: i64) -> Result<Option<DeadLetterEntry>, SpoolError> {
        NatsDeadLetterStore::get(self, id).await
    }

    async fn replay(&mut self, filter: &DeadLetterFilter) -> Result<Replayed, SpoolError> {
        NatsDeadLetterStore::replay(self, filter).await
    }

    async fn purge(&mut self, filter: &DeadLetterFilter) -> Result<u64, SpoolError> {
        NatsDeadLetterStore::purge(self, filter).await
    }

    async fn add(&mut self, letters: &[DeadLetter]) -> Result<u64, SpoolError> {
        NatsDeadLetterStore::add(self, letters).await
    }
}

/// A failed request as a storage error that names NATS.
fn storage(what: &str, error: &dyn std::error::Error) -> SpoolError {
    SpoolError::Storage(format!("NATS {what} failed: {}", error_chain(error)))
}

/// A request that got no answer in time.
fn not_answered(what: &str, timeout: Duration) -> SpoolError {
    SpoolError::Storage(format!("NATS did not answer the {what} within {timeout:?}"))
}
