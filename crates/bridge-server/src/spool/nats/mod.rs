//! The shared spool: a NATS JetStream work-queue stream that several
//! `serve` replicas append to and deliver from as one bridge.
//!
//! # How the contract maps onto JetStream
//!
//! - **Append is durable once JetStream says so.** [`Spool::append`]
//!   publishes the batch to `<subject_prefix>.<route>` (the route is the
//!   workspace as a subject token, or `_`) and returns only after the
//!   stream's PubAck, within `publish_timeout`, with the stream sequence as
//!   the [`BatchId`]. The stream (`options.stream`: work-queue retention,
//!   file storage, `replicas` copies) has `DiscardPolicy::New`: when it
//!   holds `max_bytes`, a publish is refused ([`SpoolError::Full`], 503 to
//!   Braze) and nothing acknowledged is ever dropped to make room. A
//!   timeout, a lost connection or no responders is
//!   [`SpoolError::Storage`] naming NATS (503 with `Retry-After`): never a
//!   success without a PubAck.
//! - **Braze's retries are stored once.** `Nats-Msg-Id` is a hash of the
//!   workspace and the body, so a batch sent again within the stream's
//!   `duplicate_window` is not stored twice; the PubAck of the duplicate
//!   gives the first one's sequence.
//! - **A lease is a delivery to the shared durable pull consumer**
//!   (`options.consumer`: explicit acks, unlimited deliveries, `ack_wait`
//!   given at [`NatsSpool::open`]). [`Spool::lease_within`] fetches what is
//!   due with a no-wait pull request (within the lease's
//!   [`LeaseLimits`](crate::spool::LeaseLimits), a larger message alone
//!   when starting a group; when nothing is due it answers after
//!   [`LEASE_IDLE_WAIT`], so an idle worker polls gently), keeps each
//!   message's ack subject by [`BatchId`], and counts
//!   [`LeasedBatch::attempts`] as JetStream's delivery count minus one:
//!   the deliveries before this one, leases that ran out and releases
//!   alike, exactly as [`crate::spool::sqlite::SqliteSpool`] counts them.
//! - **The lease time is kept with progress acks.** JetStream hides a
//!   delivered message for `ack_wait`; for a lease longer than that, a task
//!   sends `+WPI` (in progress) every `ack_wait / 3` until the lease's end,
//!   so the batch stays hidden for the lease time asked (or `ack_wait`
//!   when that is longer). A process that dies stops sending them: its
//!   batches come back `ack_wait` after its last progress ack, to any
//!   replica. A worker that hangs loses its batches at the lease's end, as
//!   with SQLite.
//! - **Settle stores the dead letters, then acknowledges.** Each dead
//!   letter is published to the dead-letter stream (and its PubAck awaited)
//!   with a `Nats-Msg-Id` made of the batch's sequence, its index and a hash
//!   of the letter; then the batch is acknowledged with a double ack (the
//!   server confirms it), which removes it from the work queue. JetStream
//!   has no transaction over two streams: if the process dies in between,
//!   the batch comes back and is settled again, and its dead letters are
//!   deduplicated by the dead-letter stream, whose duplicate window is
//!   made twice `ack_wait` at least when the spool creates it.
//! - **Durability is JetStream's.** A PubAck means the stream's leader and
//!   a quorum of its `replicas` have the batch in their files; nats-server
//!   fsyncs those periodically (its `sync_interval`, 2 minutes by
//!   default), not per message. A process crash loses nothing; a power
//!   loss of a single server (1 replica) can lose what it acknowledged
//!   since its last sync, which 3 replicas on separate machines cover.
//! - **Release is a nak with a delay**, `-NAK {"delay": …}`, confirmed by
//!   the server; the attempt was counted by the delivery.
//! - **Settling or releasing a batch this spool does not hold** (its lease
//!   ran out long ago) is logged and ignored, as SQLite ignores a batch
//!   that is gone: the batch is left to whoever holds it now.
//!
//! Dead letters are kept in their own stream (`options.dead_letter_stream`,
//! limits retention with no limit, subjects `<stream name lowercased>.>`,
//! one subject per reason) until [`NatsDeadLetterStore`] replays or purges
//! them; an entry's id is its sequence there.
//!
//! # Streams and consumer
//!
//! [`NatsSpool::open`] creates the two streams and the consumer when they
//! are missing, and checks them when they exist: a setting that differs
//! from the configuration (replicas, `max_bytes`, `duplicate_window`,
//! retention, discard policy, storage, subjects, `ack_wait`, acks,
//! `max_deliver`) is a [`NatsError::Mismatch`] naming the setting and both
//! values. The bridge never edits them itself: with several replicas, two
//! configurations would fight.

mod check;
mod dead_letters;
mod wire;

#[cfg(test)]
mod tests;

pub use check::{ObjectCheck, ObjectState, check};
pub use dead_letters::NatsDeadLetterStore;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType, Stream,
};
use async_nats::jetstream::{self, AckKind};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures_util::StreamExt as _;

use crate::nats::{NatsError, NatsOptions, error_chain, redacted_servers};
use crate::spool::{
    BatchId, DeadLetter, LeaseLimits, LeasedBatch, NewBatch, Spool, SpoolError, SpoolStats,
};

/// Room kept in each message for the headers the spool adds
/// (`Nats-Msg-Id` and the route): a batch body may take the rest of the
/// server's `max_payload`.
pub const HEADER_ALLOWANCE: usize = 1024;

/// The largest batch body a server with this `max_payload` can store.
pub fn body_room(max_payload: usize) -> usize {
    max_payload.saturating_sub(HEADER_ALLOWANCE)
}

/// How long a lease that finds nothing due waits before it answers, so
/// that an idle worker asks the server a few times a second (plus its own
/// idle poll), not in a busy loop.
///
/// The wait is ours, not the server's: a lease is a no-wait pull request,
/// answered at once. A pull request parked at the server with an expiry
/// (the usual long poll) races with redeliveries on nats-server 2.9: when
/// it expires as a batch falls due again, the delivery can be lost (counted
/// as an attempt, the batch hidden for another `ack_wait`, the request never
/// answered), and the consumer's state can then hand the batch out twice.
pub const LEASE_IDLE_WAIT: Duration = Duration::from_millis(250);

/// Deliveries the consumer lets be unacknowledged at once, over all
/// replicas (JetStream's default is 1,000, close to 10 replicas × 4
/// workers × 20 batches).
const MAX_ACK_PENDING: i64 = 10_000;

/// The longest `ack_wait` taken: a day (JetStream keeps it in nanoseconds).
pub const MAX_ACK_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Dead letters published before their PubAcks are awaited.
const DEAD_LETTERS_IN_FLIGHT: usize = 256;

/// The shared consumer's counts, over all replicas, from
/// [`NatsSpool::consumer_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatsConsumerStats {
    /// Batches not yet delivered to any replica.
    pub n_pending: u64,
    /// Batches delivered (leased) and not yet acknowledged or nak'd.
    pub n_ack_pending: u64,
    /// Batches delivered more than once and not yet acknowledged.
    pub n_redelivered: u64,
    /// Pull requests waiting at the server (idle workers).
    pub n_waiting: u64,
}

/// The NATS JetStream spool. See the module doc for how it keeps the
/// [`Spool`] contract.
pub struct NatsSpool {
    shared: Arc<Shared>,
    keeper: tokio::task::JoinHandle<()>,
}

/// What the spool's calls and its progress task share.
struct Shared {
    client: Client,
    /// API requests, bounded by `connect_timeout`.
    api: jetstream::Context,
    /// Publishes, their PubAcks bounded by `publish_timeout`.
    publisher: jetstream::Context,
    options: NatsOptions,
    ack_wait: Duration,
    batches: Stream,
    dead_letters: Stream,
    dead_letter_prefix: String,
    consumer: PullConsumer,
    leases: Mutex<HashMap<BatchId, Lease>>,
    closed: AtomicBool,
}

/// A batch this process holds: where to acknowledge it, and until when to
/// keep it hidden.
struct Lease {
    reply: Subject,
    sequence: u64,
    /// The end of the lease asked for.
    until: Instant,
    /// The last delivery or progress ack: JetStream hides the batch until
    /// this plus `ack_wait`.
    acked_at: Instant,
}

impl std::fmt::Debug for NatsSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSpool")
            .field("servers", &redacted_servers(&self.shared.options.servers))
            .field("stream", &self.shared.options.stream)
            .field("consumer", &self.shared.options.consumer)
            .field("ack_wait", &self.shared.ack_wait)
            .finish_non_exhaustive()
    }
}

impl NatsSpool {
    /// Opens the spool on a connected `client` (see
    /// [`crate::nats::connect`]): gets or creates the batch stream, the
    /// dead-letter stream and the durable pull consumer, checks that the
    /// existing ones have the configuration's settings, and starts the task
    /// that keeps leases with progress acks.
    ///
    /// `ack_wait` is the consumer's: how long a delivered batch stays
    /// hidden without a progress ack, hence how soon the batches of a
    /// replica that died are handed out again. `serve` passes the delivery
    /// lease (`delivery.lease_secs`); a shorter one makes failover faster,
    /// since progress acks keep longer leases anyway.
    pub async fn open(
        client: Client,
        options: &NatsOptions,
        ack_wait: Duration,
    ) -> Result<NatsSpool, NatsError> {
        check_options(options)?;
        if ack_wait.is_zero() || ack_wait > MAX_ACK_WAIT {
            return Err(NatsError::Invalid(format!(
                "ack_wait (the delivery lease) must be positive and at most {MAX_ACK_WAIT:?}, not {ack_wait:?}"
            )));
        }
        let dead_letter_prefix = dead_letter_prefix(options);
        let api = jetstream::ContextBuilder::new()
            .timeout(options.connect_timeout)
            .build(client.clone());
        let publisher = jetstream::ContextBuilder::new()
            .timeout(options.publish_timeout)
            .build(client.clone());
        let batches = ensure_stream(&api, batch_stream_config(options)).await?;
        let dead_letters = ensure_stream(
            &api,
            dead_letter_stream_config(options, &dead_letter_prefix, ack_wait),
        )
        .await?;
        let consumer = ensure_consumer(&batches, options, ack_wait).await?;
        let window = dead_letters.cached_info().config.duplicate_window;
        if window < dead_letter_duplicate_window(options, ack_wait) {
            tracing::warn!(
                stream = %options.dead_letter_stream,
                duplicate_window = ?window,
                ack_wait = ?ack_wait,
                "The dead-letter stream's duplicate window is shorter than twice ack_wait: a settlement repeated after a crash may store its dead letters twice; raise it with nats stream edit --dupe-window."
            );
        }
        let shared = Arc::new(Shared {
            client,
            api,
            publisher,
            options: options.clone(),
            ack_wait,
            batches,
            dead_letters,
            dead_letter_prefix,
            consumer,
            leases: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let keeper = tokio::spawn(keep_leases(Arc::downgrade(&shared), ack_wait));
        let info = shared.batches.cached_info();
        tracing::info!(
            stream = %options.stream,
            consumer = %options.consumer,
            n_batches = info.state.messages,
            n_bytes = info.state.bytes,
            "Opened the NATS spool."
        );
        Ok(NatsSpool { shared, keeper })
    }

    /// Whether the client is connected to a NATS server now (for
    /// `/readyz`); while it is not, every call fails fast with
    /// [`SpoolError::Storage`] and the client reconnects in the background.
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// The connection's state (connected, disconnected, pending).
    pub fn connection_state(&self) -> async_nats::connection::State {
        self.shared.client.connection_state()
    }

    /// The client, to share the connection (cohort state, `dlq`).
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The largest message the connected server accepts, headers included.
    pub fn max_payload(&self) -> usize {
        self.shared.client.server_info().max_payload
    }

    /// The largest batch body this server can store: its `max_payload`
    /// less [`HEADER_ALLOWANCE`]. Ingest caps bodies at this (or lower), so
    /// that a batch too large for NATS gets 413, which Braze answers by
    /// splitting it, not a 503 it would retry for ever.
    pub fn max_body_bytes(&self) -> usize {
        body_room(self.max_payload())
    }

    /// The consumer's counts, from the server: batches waiting for a first
    /// delivery, leased, redelivered; for `/status` and the metrics.
    pub async fn consumer_stats(&self) -> Result<NatsConsumerStats, SpoolError> {
        self.shared.check_open()?;
        let info = self
            .shared
            .consumer
            .get_info()
            .await
            .map_err(|error| self.shared.storage("consumer info", &error))?;
        Ok(NatsConsumerStats {
            n_pending: info.num_pending,
            n_ack_pending: info.num_ack_pending as u64,
            n_redelivered: info.num_redelivered as u64,
            n_waiting: info.num_waiting as u64,
        })
    }

    /// A dead-letter store on this spool's streams and connection.
    pub fn dead_letter_store(&self) -> NatsDeadLetterStore {
        NatsDeadLetterStore::new(
            self.shared.api.clone(),
            self.shared.publisher.clone(),
            self.shared.options.clone(),
            self.shared.dead_letters.clone(),
        )
    }

    /// Stops accepting (every later call gets [`SpoolError::Closed`]),
    /// stops the progress acks, gives back the batches still leased (a nak
    /// without delay, so another replica takes them at once) and flushes
    /// the connection; while disconnected, only the first two (the leases
    /// then run out after `ack_wait`).
    pub async fn close(&self) -> Result<(), SpoolError> {
        self.shared.closed.store(true, Ordering::Release);
        self.keeper.abort();
        let leases: Vec<(BatchId, Lease)> = self.shared.lock_leases().drain().collect();
        if !self.shared.is_connected() {
            // Nothing can be given back or flushed: the leases run out.
            return Ok(());
        }
        let n_leases = leases.len();
        for (_, lease) in leases {
            // A nak that fails leaves the batch to its ack_wait.
            let _ = self
                .shared
                .confirmed_ack(lease.reply, AckKind::Nak(None), "nak at close")
                .await;
        }
        if n_leases != 0 {
            tracing::info!(n_batches = n_leases, "Gave back the batches still leased.");
        }
        tokio::time::timeout(
            self.shared.options.publish_timeout,
            self.shared.client.flush(),
        )
        .await
        .map_err(|_| self.shared.not_answered("flush at close"))?
        .map_err(|error| self.shared.storage("flush at close", &error))
    }
}

impl Drop for NatsSpool {
    /// Without [`NatsSpool::close`] the leases are simply abandoned (as by
    /// a process that dies): they come back after `ack_wait`.
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Shared {
    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Refuses when closed, or at once when NATS is not connected (rather
    /// than wait for a timeout per call while the client reconnects).
    fn check_open(&self) -> Result<(), SpoolError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SpoolError::Closed);
        }
        if !self.is_connected() {
            return Err(SpoolError::Storage(format!(
                "NATS is not connected ({}); the client is reconnecting",
                redacted_servers(&self.options.servers)
            )));
        }
        Ok(())
    }

    fn lock_leases(&self) -> std::sync::MutexGuard<'_, HashMap<BatchId, Lease>> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A failed NATS request as a storage error that names NATS.
    fn storage(&self, what: &str, error: &dyn std::error::Error) -> SpoolError {
        SpoolError::Storage(format!("NATS {what} failed: {}", error_chain(error)))
    }

    /// A NATS request that got no answer in time.
    fn not_answered(&self, what: &str) -> SpoolError {
        SpoolError::Storage(format!(
            "NATS did not answer the {what} within {:?} (servers {})",
            self.options.publish_timeout,
            redacted_servers(&self.options.servers)
        ))
    }

    /// Sends an acknowledgement of `kind` on `reply` and waits for the
    /// server to confirm it.
    async fn confirmed_ack(
        &self,
        reply: Subject,
        kind: AckKind,
        what: &str,
    ) -> Result<(), SpoolError> {
        let request = self.client.request(reply, Bytes::from(kind));
        match tokio::time::timeout(self.options.publish_timeout, request).await {
            Err(_) => Err(self.not_answered(what)),
            Ok(Err(error)) => Err(self.storage(what, &error)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Publishes on `publisher` and awaits the PubAck, within
    /// `publish_timeout` for both.
    async fn publish(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: Bytes,
    ) -> Result<jetstream::publish::PublishAck, PublishFailure> {
        let publish = async {
            let ack = self
                .publisher
                .publish_with_headers(subject, headers, payload)
                .await?;
            ack.await
        };
        match tokio::time::timeout(self.options.publish_timeout, publish).await {
            Err(_) => Err(PublishFailure::TimedOut),
            Ok(Err(error)) => Err(PublishFailure::Refused(error)),
            Ok(Ok(ack)) => Ok(ack),
        }
    }

    /// Why a publish of `n_bytes` to `stream` failed, as a spool error.
    async fn publish_error(
        &self,
        stream: &str,
        n_bytes: usize,
        failure: PublishFailure,
    ) -> SpoolError {
        let error = match failure {
            PublishFailure::TimedOut => {
                return SpoolError::Storage(format!(
                    "NATS did not acknowledge the publish to stream {stream} within {:?}",
                    self.options.publish_timeout
                ));
            }
            PublishFailure::Refused(error) => error,
        };
        match error.kind() {
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                SpoolError::Storage(format!(
                    "NATS did not acknowledge the publish to stream {stream} within {:?}: {}",
                    self.options.publish_timeout,
                    error_chain(&error)
                ))
            }
            PublishErrorKind::StreamNotFound => SpoolError::Storage(format!(
                "no NATS JetStream stream answered for stream {stream} (no responders): is JetStream down, or the stream deleted?"
            )),
            PublishErrorKind::MaxPayloadExceeded => SpoolError::Storage(format!(
                "a message of {n_bytes} bytes and its headers exceeds the NATS server's max_payload of {} bytes (did the servers' max_payload shrink since the bridge connected?)",
                self.client.server_info().max_payload
            )),
            _ if is_stream_full(&error) => {
                let n_bytes = match self.batches.get_info().await {
                    Ok(info) => info.state.bytes,
                    Err(_) => self.options.max_bytes,
                };
                SpoolError::Full {
                    n_bytes,
                    max_bytes: self.options.max_bytes,
                }
            }
            _ => SpoolError::Storage(format!(
                "NATS refused the publish to stream {stream}: {}",
                error_chain(&error)
            )),
        }
    }

    /// Publishes the dead letters of the batch at `sequence` and awaits
    /// their PubAcks (see [`wire::dead_letter_msg_id`] for why a second
    /// settlement of the batch stores them once).
    async fn publish_dead_letters(
        &self,
        sequence: u64,
        id: BatchId,
        dead_letters: &[DeadLetter],
    ) -> Result<(), SpoolError> {
        let shared = self;
        let now_ms = crate::clock::now_ms();
        for (chunk_idx, chunk) in dead_letters.chunks(DEAD_LETTERS_IN_FLIGHT).enumerate() {
            // Published together, then their PubAcks awaited.
            let mut acks = Vec::with_capacity(chunk.len());
            for (idx_in_chunk, letter) in chunk.iter().enumerate() {
                let index = chunk_idx * DEAD_LETTERS_IN_FLIGHT + idx_in_chunk;
                let msg_id = wire::dead_letter_msg_id(sequence, index, letter);
                let headers = wire::dead_letter_headers(&msg_id, letter, Some(id.0), now_ms);
                let subject = format!(
                    "{}.{}",
                    shared.dead_letter_prefix,
                    wire::token(Some(&letter.reason))
                );
                let sent = tokio::time::timeout(
                    shared.options.publish_timeout,
                    shared
                        .publisher
                        .publish_with_headers(subject, headers, letter.event.clone()),
                )
                .await;
                match sent {
                    Err(_) => return Err(shared.not_answered("dead-letter publish")),
                    Ok(Err(error)) => {
                        return Err(shared
                            .publish_error(
                                &shared.options.dead_letter_stream,
                                letter.event.len(),
                                PublishFailure::Refused(error),
                            )
                            .await);
                    }
                    Ok(Ok(ack)) => acks.push((letter.event.len(), ack)),
                }
            }
            for (n_bytes, ack) in acks {
                let failure =
                    match tokio::time::timeout(shared.options.publish_timeout, ack.into_future())
                        .await
                    {
                        Ok(Ok(_)) => continue,
                        Ok(Err(error)) => PublishFailure::Refused(error),
                        Err(_) => PublishFailure::TimedOut,
                    };
                return Err(shared
                    .publish_error(&shared.options.dead_letter_stream, n_bytes, failure)
                    .await);
            }
        }
        Ok(())
    }

    /// Takes a delivered message as a leased batch, keeping its ack subject.
    fn take_lease(&self, message: jetstream::Message, lease: Duration) -> Option<LeasedBatch> {
        let now = Instant::now();
        let (sequence, delivered, published_ms) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                info.delivered,
                unix_ms(info.published.unix_timestamp_nanos()),
            ),
            Err(error) => {
                tracing::warn!(error = %error, subject = %message.subject, "Skipped a message from the NATS consumer that is not a JetStream delivery.");
                return None;
            }
        };
        let reply = message.reply.clone()?;
        let headers = message.headers.as_ref();
        let batch = NewBatch {
            workspace: wire::text(headers, wire::WORKSPACE),
            received_at_ms: wire::integer(headers, wire::RECEIVED_AT_MS).unwrap_or(published_ms),
            body: message.payload.clone(),
        };
        let id = BatchId(i64::try_from(sequence).unwrap_or(i64::MAX));
        self.lock_leases().insert(
            id,
            Lease {
                reply,
                sequence,
                until: later(now, lease),
                acked_at: now,
            },
        );
        Some(LeasedBatch {
            id,
            batch,
            // Deliveries before this one, as SQLite counts leases handed out
            // before: JetStream counts this one too.
            attempts: u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX),
        })
    }

    /// Fetches up to `count` messages, within `max_bytes` if set, keeping
    /// every message received as a lease, even when the fetch ends with an
    /// error or a timeout.
    async fn fetch(
        &self,
        count: usize,
        max_bytes: Option<usize>,
        lease: Duration,
        leased: &mut Vec<LeasedBatch>,
    ) -> Result<FetchEnd, SpoolError> {
        // A no-wait request: the server answers at once with what is due,
        // never parking it (see LEASE_IDLE_WAIT for why).
        let mut fetch = self.consumer.fetch().max_messages(count);
        if let Some(max_bytes) = max_bytes {
            fetch = fetch.max_bytes(max_bytes);
        }
        let deadline = tokio::time::Instant::now() + self.options.connect_timeout;
        let mut messages = tokio::time::timeout_at(deadline, fetch.messages())
            .await
            .map_err(|_| self.not_answered("lease request"))?
            .map_err(|error| self.storage("lease request", &error))?;
        loop {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Err(_) => {
                    // Connected (checked first) but slow: no batch this time.
                    tracing::debug!(
                        n_leased = leased.len(),
                        "A NATS lease request got no complete answer in time."
                    );
                    return Ok(FetchEnd::Done);
                }
                Ok(None) => return Ok(FetchEnd::Done),
                Ok(Some(Ok(message))) => leased.extend(self.take_lease(message, lease)),
                Ok(Some(Err(error))) => {
                    let text = error.to_string();
                    if text.to_ascii_lowercase().contains("exceeds maxbytes") {
                        return Ok(FetchEnd::TooLarge);
                    }
                    if leased.is_empty() {
                        return Err(self.storage("lease request", error.as_ref()));
                    }
                    tracing::debug!(error = %text, "A NATS lease request ended early.");
                    return Ok(FetchEnd::Done);
                }
            }
        }
    }
}

/// How a fetch ended.
enum FetchEnd {
    /// Its messages are in, or there were none.
    Done,
    /// The next message does not fit in the bytes left.
    TooLarge,
}

/// A publish that did not get its PubAck.
enum PublishFailure {
    TimedOut,
    Refused(jetstream::context::PublishError),
}

impl Spool for NatsSpool {
    async fn append(&self, batch: NewBatch) -> Result<BatchId, SpoolError> {
        let shared = &self.shared;
        shared.check_open()?;
        let workspace = batch.workspace.as_deref();
        let subject = format!(
            "{}.{}",
            shared.options.subject_prefix,
            wire::token(workspace)
        );
        let msg_id = wire::batch_msg_id(workspace, &batch.body);
        let headers = wire::batch_headers(&msg_id, workspace, batch.received_at_ms);
        let n_bytes = batch.body.len();
        match shared.publish(subject, headers, batch.body).await {
            Ok(ack) => Ok(BatchId(i64::try_from(ack.sequence).unwrap_or(i64::MAX))),
            Err(failure) => Err(shared
                .publish_error(&shared.options.stream, n_bytes, failure)
                .await),
        }
    }

    async fn lease_within(
        &self,
        limits: LeaseLimits,
        lease: Duration,
    ) -> Result<Vec<LeasedBatch>, SpoolError> {
        let shared = &self.shared;
        shared.check_open()?;
        if limits.max_batches == 0 {
            return Ok(Vec::new());
        }
        let mut leased = Vec::new();
        let end = shared
            .fetch(
                limits.max_batches,
                Some(limits.max_bytes),
                lease,
                &mut leased,
            )
            .await?;
        if matches!(end, FetchEnd::TooLarge) && leased.is_empty() && limits.oversized_alone {
            // The next batch alone is larger than the bound: it goes alone.
            shared.fetch(1, None, lease, &mut leased).await?;
        }
        if leased.is_empty() {
            tokio::time::sleep(LEASE_IDLE_WAIT).await;
        }
        Ok(leased)
    }

    async fn settle(&self, id: BatchId, dead_letters: Vec<DeadLetter>) -> Result<(), SpoolError> {
        let shared = &self.shared;
        shared.check_open()?;
        let Some((reply, sequence)) = shared
            .lock_leases()
            .get(&id)
            .map(|lease| (lease.reply.clone(), lease.sequence))
        else {
            tracing::warn!(
                batch_id = id.0,
                n_dead_letters = dead_letters.len(),
                "Settled a batch this process does not hold (its lease ran out long ago?); left it to whoever holds it now."
            );
            return Ok(());
        };
        shared
            .publish_dead_letters(sequence, id, &dead_letters)
            .await?;
        shared
            .confirmed_ack(reply, AckKind::Ack, "batch ack")
            .await?;
        shared.lock_leases().remove(&id);
        Ok(())
    }

    async fn release(&self, id: BatchId, retry_in: Duration) -> Result<(), SpoolError> {
        let shared = &self.shared;
        shared.check_open()?;
        let Some(lease) = shared.lock_leases().remove(&id) else {
            tracing::warn!(
                batch_id = id.0,
                "Released a batch this process does not hold (its lease ran out long ago?); ignored it."
            );
            return Ok(());
        };
        let delay = (!retry_in.is_zero()).then_some(retry_in);
        shared
            .confirmed_ack(lease.reply, AckKind::Nak(delay), "batch nak")
            .await
    }

    async fn stats(&self) -> Result<SpoolStats, SpoolError> {
        let shared = &self.shared;
        shared.check_open()?;
        let mut oldest_received_at_ms = None;
        let mut info = shared
            .batches
            .get_info()
            .await
            .map_err(|error| shared.storage("stream info", &error))?;
        // The first message may be settled between the two requests: look
        // again a few times, then report no age rather than fail.
        for _ in 0..3 {
            if info.state.messages == 0 {
                break;
            }
            match shared
                .batches
                .get_raw_message(info.state.first_sequence)
                .await
            {
                Ok(message) => {
                    let stored_ms = unix_ms(message.time.unix_timestamp_nanos());
                    oldest_received_at_ms = Some(
                        wire::integer(Some(&message.headers), wire::RECEIVED_AT_MS)
                            .unwrap_or(stored_ms),
                    );
                    break;
                }
                Err(_) => {
                    info = shared
                        .batches
                        .get_info()
                        .await
                        .map_err(|error| shared.storage("stream info", &error))?;
                }
            }
        }
        let dead_letters = shared
            .dead_letters
            .get_info()
            .await
            .map_err(|error| shared.storage("dead-letter stream info", &error))?;
        Ok(SpoolStats {
            n_batches: info.state.messages,
            n_bytes: info.state.bytes,
            oldest_received_at_ms,
            n_dead_letters: dead_letters.state.messages,
            n_quarantined: 0,
        })
    }
}

/// Keeps the leases of this process: a progress ack for each batch whose
/// hiding would end before its lease, every `ack_wait / 3`; leases that
/// ran out long ago (never settled nor released: a worker that panicked)
/// are forgotten.
async fn keep_leases(shared: Weak<Shared>, ack_wait: Duration) {
    let period = (ack_wait / 3).max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let progress = Bytes::from(AckKind::Progress);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let due: Vec<Subject> = {
            let mut leases = shared.lock_leases();
            leases.retain(|_, lease| {
                now < later(lease.acked_at, ack_wait.saturating_mul(2)) || now < lease.until
            });
            leases
                .values_mut()
                .filter(|lease| later(lease.acked_at, ack_wait) < lease.until)
                .map(|lease| {
                    lease.acked_at = now;
                    lease.reply.clone()
                })
                .collect()
        };
        for reply in due {
            // A progress ack that is lost costs at most the lease.
            if let Err(error) = shared.client.publish(reply, progress.clone()).await {
                tracing::debug!(error = %error, "A NATS progress ack could not be sent.");
            }
        }
    }
}

/// `instant + duration`, or a century later when that overflows (a lease of
/// `u64::MAX` seconds).
fn later(instant: Instant, duration: Duration) -> Instant {
    instant
        .checked_add(duration)
        .or_else(|| instant.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(instant)
}

/// Whether JetStream refused a publish because the stream is at its limits
/// (`DiscardPolicy::New`).
fn is_stream_full(error: &jetstream::context::PublishError) -> bool {
    let Some(source) = std::error::Error::source(error) else {
        return false;
    };
    let description = source.to_string().to_ascii_lowercase();
    description.contains("maximum bytes exceeded")
        || description.contains("maximum messages exceeded")
        || description.contains("maximum messages per subject exceeded")
}

/// Nanoseconds since the UNIX epoch as milliseconds.
fn unix_ms(nanos: i128) -> i64 {
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// The dead-letter stream's subject prefix: its name in lower case.
fn dead_letter_prefix(options: &NatsOptions) -> String {
    options.dead_letter_stream.to_ascii_lowercase()
}

/// Refuses options no stream can be made of.
fn check_options(options: &NatsOptions) -> Result<(), NatsError> {
    for (what, name) in [
        ("stream", &options.stream),
        ("dead-letter stream", &options.dead_letter_stream),
        ("consumer", &options.consumer),
    ] {
        if name.is_empty()
            || name.chars().any(|c| {
                c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
            })
        {
            return Err(NatsError::Invalid(format!(
                "the {what} name {name:?} is not a JetStream name (no spaces, '.', '*', '>', '/')"
            )));
        }
    }
    if options.stream == options.dead_letter_stream {
        return Err(NatsError::Invalid(format!(
            "the batch and dead-letter streams are both {:?}",
            options.stream
        )));
    }
    let prefix_tokens: Vec<&str> = options.subject_prefix.split('.').collect();
    if prefix_tokens.iter().any(|token| {
        token.is_empty()
            || token
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>'))
    }) {
        return Err(NatsError::Invalid(format!(
            "the subject prefix {:?} is not a subject (dot-separated tokens without spaces or wildcards)",
            options.subject_prefix
        )));
    }
    let dead_letter_prefix = dead_letter_prefix(options);
    let dead_letter_tokens: Vec<&str> = dead_letter_prefix.split('.').collect();
    let shorter = prefix_tokens.len().min(dead_letter_tokens.len());
    if prefix_tokens[..shorter] == dead_letter_tokens[..shorter] {
        return Err(NatsError::Invalid(format!(
            "the batch subjects {}.> and the dead-letter subjects {dead_letter_prefix}.> overlap; choose another subject prefix or dead-letter stream",
            options.subject_prefix
        )));
    }
    if options.replicas == 0 || options.replicas > 5 {
        return Err(NatsError::Invalid(format!(
            "replicas must be 1 to 5, not {}",
            options.replicas
        )));
    }
    if options.max_bytes == 0 || i64::try_from(options.max_bytes).is_err() {
        return Err(NatsError::Invalid(format!(
            "max_bytes must be positive and fit JetStream's signed limit, not {}",
            options.max_bytes
        )));
    }
    Ok(())
}

/// The batch stream the configuration asks for.
fn batch_stream_config(options: &NatsOptions) -> StreamConfig {
    StreamConfig {
        name: options.stream.clone(),
        description: Some(
            "Braze Currents batches accepted by the bridge, waiting for delivery to Mixpanel"
                .to_owned(),
        ),
        subjects: vec![format!("{}.>", options.subject_prefix)],
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::New,
        max_bytes: i64::try_from(options.max_bytes).unwrap_or(i64::MAX),
        duplicate_window: options.duplicate_window,
        num_replicas: options.replicas,
        storage: StorageType::File,
        ..Default::default()
    }
}

/// The dead-letter stream's duplicate window when it is created: long
/// enough that a batch settled again after its process died (`ack_wait`
/// later, at least) stores its dead letters once. An existing stream keeps
/// its own (not compared: the consumer's `ack_wait` is); if `ack_wait` grew
/// past half of it, a settlement repeated after a crash may store its dead
/// letters twice, which [`NatsSpool::open`] warns about.
fn dead_letter_duplicate_window(options: &NatsOptions, ack_wait: Duration) -> Duration {
    options.duplicate_window.max(ack_wait.saturating_mul(2))
}

/// The dead-letter stream the configuration asks for.
fn dead_letter_stream_config(
    options: &NatsOptions,
    prefix: &str,
    ack_wait: Duration,
) -> StreamConfig {
    StreamConfig {
        name: options.dead_letter_stream.clone(),
        description: Some("Events the bridge could not deliver, kept until replayed or purged (braze-mixpanel-bridge dlq)".to_owned()),
        subjects: vec![format!("{prefix}.>")],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        duplicate_window: dead_letter_duplicate_window(options, ack_wait),
        num_replicas: options.replicas,
        storage: StorageType::File,
        ..Default::default()
    }
}

/// Gets the stream `wanted.name`, checking its settings, or creates it.
async fn ensure_stream(
    api: &jetstream::Context,
    wanted: StreamConfig,
) -> Result<Stream, NatsError> {
    let name = wanted.name.clone();
    let request_error = |what: &str, error: &dyn std::error::Error| NatsError::JetStream {
        what: format!("{what} of stream {name}"),
        reason: error_chain(error),
    };
    let existing = match api.get_stream(&name).await {
        Ok(stream) => Some(stream),
        Err(error) if is_not_found(&error) => None,
        Err(error) => return Err(request_error("info", &error)),
    };
    let stream = match existing {
        Some(stream) => stream,
        None => match api.create_stream(wanted.clone()).await {
            Ok(stream) => {
                tracing::info!(stream = %name, "Created the NATS stream.");
                stream
            }
            // Another replica may have created it meanwhile.
            Err(create_error) => api
                .get_stream(&name)
                .await
                .map_err(|_| request_error("creation", &create_error))?,
        },
    };
    compare_stream(&stream.cached_info().config, &wanted)?;
    Ok(stream)
}

/// Whether a JetStream error says the object (stream, consumer, message)
/// does not exist: a JetStream API error with status 404, which the client
/// keeps in the error's kind (shown as `… (code 404, error code …)`), in
/// its source, or names in the kind itself.
fn is_not_found(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<jetstream::Error>()
            .is_some_and(|jetstream_error| jetstream_error.code() == 404)
        {
            return true;
        }
        source = error.source();
    }
    // Some kinds say it in words instead (`consumer not found`, `no
    // message found`).
    let text = error.to_string().to_ascii_lowercase();
    text.contains("(code 404,") || text.contains("not found") || text.contains("no message found")
}

/// Checks an existing stream against the configuration's.
fn compare_stream(found: &StreamConfig, wanted: &StreamConfig) -> Result<(), NatsError> {
    let mismatch = |setting: &'static str, found_value: String, wanted_value: String| {
        Err(NatsError::Mismatch {
            object: format!("stream {}", wanted.name),
            object_kind: "stream",
            setting,
            found: found_value,
            wanted: wanted_value,
        })
    };
    if found.retention != wanted.retention {
        return mismatch(
            "retention",
            format!("{:?}", found.retention),
            format!("{:?}", wanted.retention),
        );
    }
    if found.storage != wanted.storage {
        return mismatch(
            "storage",
            format!("{:?}", found.storage),
            format!("{:?}", wanted.storage),
        );
    }
    if found.subjects != wanted.subjects {
        return mismatch(
            "subjects",
            found.subjects.join(", "),
            wanted.subjects.join(", "),
        );
    }
    if found.num_replicas != wanted.num_replicas {
        return mismatch(
            "replicas",
            found.num_replicas.to_string(),
            wanted.num_replicas.to_string(),
        );
    }
    // The dead-letter stream's window follows ack_wait (see
    // `dead_letter_duplicate_window`), which the consumer's check covers.
    if wanted.retention == RetentionPolicy::WorkQueue
        && found.duplicate_window != wanted.duplicate_window
    {
        return mismatch(
            "duplicate_window",
            format!("{:?}", found.duplicate_window),
            format!("{:?}", wanted.duplicate_window),
        );
    }
    if wanted.retention == RetentionPolicy::WorkQueue {
        // Only the batch stream's limits matter: nothing acknowledged may
        // be dropped to make room.
        if found.discard != wanted.discard {
            return mismatch(
                "discard policy",
                format!("{:?}", found.discard),
                format!("{:?}", wanted.discard),
            );
        }
        if found.max_bytes != wanted.max_bytes {
            return mismatch(
                "max_bytes",
                found.max_bytes.to_string(),
                wanted.max_bytes.to_string(),
            );
        }
    } else if found.max_bytes > 0 || found.max_messages > 0 || !found.max_age.is_zero() {
        // Dead letters are kept until replayed or purged, never aged out.
        return mismatch(
            "limits (max_bytes, max_msgs, max_age)",
            format!(
                "{}, {}, {:?}",
                found.max_bytes, found.max_messages, found.max_age
            ),
            "none".to_owned(),
        );
    }
    Ok(())
}

/// Gets the durable pull consumer, checking its settings, or creates it.
async fn ensure_consumer(
    batches: &Stream,
    options: &NatsOptions,
    ack_wait: Duration,
) -> Result<PullConsumer, NatsError> {
    let name = &options.consumer;
    let object = format!("consumer {name} of stream {}", options.stream);
    let request_error = |what: &str, error: &dyn std::error::Error| NatsError::JetStream {
        what: format!("{what} of {object}"),
        reason: error_chain(error),
    };
    let wanted = PullConfig {
        durable_name: Some(name.clone()),
        description: Some("The bridge's delivery workers, in every replica".to_owned()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    };
    let found = match batches.consumer_info(name).await {
        Ok(info) => info.config,
        Err(error) if is_not_found(&error) => match batches.create_consumer(wanted).await {
            Ok(_) => {
                tracing::info!(consumer = %name, "Created the NATS consumer.");
                return get_consumer(batches, name, &request_error).await;
            }
            // Another replica may have created it meanwhile.
            Err(create_error) => {
                batches
                    .consumer_info(name)
                    .await
                    .map_err(|_| request_error("creation", &create_error))?
                    .config
            }
        },
        Err(error) => return Err(request_error("info", &error)),
    };
    compare_consumer(&found, &object, options, ack_wait)?;
    get_consumer(batches, name, &request_error).await
}

/// The consumer's handle.
async fn get_consumer(
    batches: &Stream,
    name: &str,
    request_error: &impl Fn(&str, &dyn std::error::Error) -> NatsError,
) -> Result<PullConsumer, NatsError> {
    batches
        .get_consumer::<PullConfig>(name)
        .await
        .map_err(|error| request_error("lookup", &*error))
}

/// Checks an existing consumer against the configuration's.
fn compare_consumer(
    found: &async_nats::jetstream::consumer::Config,
    object: &str,
    options: &NatsOptions,
    ack_wait: Duration,
) -> Result<(), NatsError> {
    let mismatch = |setting: &'static str, found: String, wanted: String| {
        Err(NatsError::Mismatch {
            object: object.to_owned(),
            object_kind: "consumer",
            setting,
            found,
            wanted,
        })
    };
    if found.deliver_subject.is_some() {
        return mismatch("type", "push".to_owned(), "pull".to_owned());
    }
    if found.ack_policy != AckPolicy::Explicit {
        return mismatch(
            "ack policy",
            format!("{:?}", found.ack_policy),
            "Explicit".to_owned(),
        );
    }
    if found.ack_wait != ack_wait {
        return mismatch(
            "ack_wait",
            format!("{:?}", found.ack_wait),
            format!("{ack_wait:?} (the delivery lease)"),
        );
    }
    if found.max_deliver > 0 {
        return mismatch(
            "max_deliver",
            found.max_deliver.to_string(),
            "unlimited (delivery enforces delivery.max_attempts)".to_owned(),
        );
    }
    if !found.filter_subject.is_empty()
        && found.filter_subject != format!("{}.>", options.subject_prefix)
    {
        return mismatch(
            "filter_subject",
            found.filter_subject.clone(),
            "none".to_owned(),
        );
    }
    Ok(())
}
