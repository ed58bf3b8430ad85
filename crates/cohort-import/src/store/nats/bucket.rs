//! One JetStream key-value bucket as the NATS store uses it: reads that
//! tell a key's revision, compare-and-set writes, purges that leave no
//! delete marker (and can be conditional on a revision), bulk writes in
//! order, and scans and counts by key prefix.
//!
//! Every bucket keeps one value per key (`history` 1), so the stream
//! behind it holds exactly the live keys in the order they were last
//! written, and a filtered consumer's pending count is a count of keys.

use std::fmt::Display;
use std::ops::ControlFlow;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt as _;

use crate::store::StoreError;

/// Messages asked for at once by a scan.
const SCAN_BATCH: usize = 1000;

/// A key as last read.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    /// Its value (`None`: absent, deleted or purged).
    pub(super) value: Option<Bytes>,
    /// The revision to compare-and-set against (0: the key has no message).
    pub(super) revision: u64,
}

/// A bucket.
#[derive(Clone)]
pub(super) struct Bucket {
    kv: kv::Store,
    jetstream: jetstream::Context,
    name: String,
}

/// The first setting of an existing bucket's stream that is not what the
/// store needs, as (setting, found, wanted): `replicas` (the configured
/// count), then `history` (one value per key). [`Bucket::open`] refuses
/// such a bucket; `NatsStore::check` reports it.
pub(super) fn mismatch(
    config: &stream::Config,
    replicas: usize,
) -> Option<(&'static str, String, String)> {
    let actual = config.num_replicas.max(1);
    if actual != replicas {
        return Some(("replicas", actual.to_string(), replicas.to_string()));
    }
    if config.max_messages_per_subject != 1 {
        return Some((
            "history",
            config.max_messages_per_subject.to_string(),
            "1".to_owned(),
        ));
    }
    None
}

impl Bucket {
    /// Opens the bucket `name`, creating it (file storage, one value per
    /// key, values older than `max_age` dropped unless it is zero) if it
    /// does not exist. An existing bucket must have `replicas` replicas and
    /// keep one value per key.
    pub(super) async fn open(
        jetstream: &jetstream::Context,
        name: &str,
        replicas: usize,
        max_age: Duration,
    ) -> Result<Bucket, StoreError> {
        let kv = match jetstream.get_key_value(name).await {
            Ok(kv) => kv,
            Err(_) => {
                // The stream a bucket is, as the client would make it; made
                // here because the client's own way first asks for the
                // account's information, which it cannot read from a
                // 2.9 server.
                let config = stream::Config {
                    name: format!("KV_{name}"),
                    description: Some("braze-mixpanel-bridge cohort state".to_owned()),
                    subjects: vec![format!("$KV.{name}.>")],
                    max_messages_per_subject: 1,
                    max_bytes: -1,
                    max_age,
                    max_message_size: -1,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    allow_rollup: true,
                    deny_delete: true,
                    deny_purge: false,
                    allow_direct: true,
                    discard: stream::DiscardPolicy::New,
                    ..stream::Config::default()
                };
                let created = jetstream.create_stream(config).await;
                // Another replica may have created it meanwhile, or with
                // other settings (compared below).
                match jetstream.get_key_value(name).await {
                    Ok(kv) => kv,
                    Err(error) => {
                        return Err(StoreError::Storage(match created {
                            Err(create_error) => format!(
                                "cannot create the NATS key-value bucket {name}: {create_error}"
                            ),
                            Ok(_) => {
                                format!("cannot open the NATS key-value bucket {name}: {error}")
                            }
                        }));
                    }
                }
            }
        };
        match mismatch(&kv.stream.cached_info().config, replicas) {
            None => {}
            Some(("replicas", actual, _)) => {
                return Err(StoreError::Storage(format!(
                    "the NATS key-value bucket {name} has {actual} replica(s), but {replicas} are configured: \
                     change the setting, or the bucket's stream (KV_{name})"
                )));
            }
            Some((_, history, _)) => {
                return Err(StoreError::Storage(format!(
                    "the NATS key-value bucket {name} keeps {history} values per key, not 1: it was not made by this bridge"
                )));
            }
        }
        Ok(Bucket {
            kv,
            jetstream: jetstream.clone(),
            name: name.to_owned(),
        })
    }

    /// The bucket's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, what: &str, key: &str, error: impl Display) -> StoreError {
        StoreError::Storage(format!(
            "NATS key-value bucket {}: cannot {what} {key}: {error}",
            self.name
        ))
    }

    /// The subject a key is stored under.
    fn subject(&self, key: &str) -> String {
        format!("{}{key}", self.kv.prefix)
    }

    /// The key's value and revision.
    pub(super) async fn read(&self, key: &str) -> Result<Slot, StoreError> {
        match self
            .kv
            .entry(key)
            .await
            .map_err(|error| self.error("read", key, error))?
        {
            None => Ok(Slot {
                value: None,
                revision: 0,
            }),
            Some(entry) => Ok(Slot {
                value: (entry.operation == kv::Operation::Put).then_some(entry.value),
                revision: entry.revision,
            }),
        }
    }

    /// Writes `value`; returns its revision.
    pub(super) async fn put(&self, key: &str, value: Bytes) -> Result<u64, StoreError> {
        self.kv
            .put(key, value)
            .await
            .map_err(|error| self.error("write", key, error))
    }

    /// Writes `value` if the key is still at `revision` (0: has no
    /// message). Returns the new revision, or `None` if it changed.
    pub(super) async fn cas(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<Option<u64>, StoreError> {
        match self.kv.update(key, value, revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(error) => Err(self.error("write", key, error)),
        }
    }

    /// Removes the key if its revision is at most `revision`: a newer value
    /// survives. Leaves no delete marker.
    pub(super) async fn purge_through(&self, key: &str, revision: u64) -> Result<(), StoreError> {
        self.kv
            .stream
            .purge()
            .filter(self.subject(key))
            .sequence(revision.saturating_add(1))
            .await
            .map(drop)
            .map_err(|error| self.error("remove", key, error))
    }

    /// Removes the key whatever its revision. Leaves no delete marker.
    pub(super) async fn purge(&self, key: &str) -> Result<(), StoreError> {
        self.kv
            .stream
            .purge()
            .filter(self.subject(key))
            .await
            .map(drop)
            .map_err(|error| self.error("remove", key, error))
    }

    /// Writes these values in this order (their revisions follow it), up
    /// to `window` awaiting their acknowledgement at once; `check` runs
    /// before each window and stops the writes if it fails. Returns the
    /// revisions.
    pub(super) async fn put_many(
        &self,
        items: Vec<(String, Bytes)>,
        window: usize,
        mut check: impl FnMut() -> Result<(), StoreError>,
    ) -> Result<Vec<u64>, StoreError> {
        let mut revisions = Vec::with_capacity(items.len());
        // A bucket reached through another account's JetStream (a prefix)
        // or mirrored is written the way the client knows; ours are not.
        let direct = !self.kv.use_jetstream_prefix && self.kv.put_prefix.is_none();
        for chunk in items.chunks(window.max(1)) {
            check()?;
            if !direct {
                for (key, value) in chunk {
                    revisions.push(self.put(key, value.clone()).await?);
                }
                continue;
            }
            let mut acks = Vec::with_capacity(chunk.len());
            for (key, value) in chunk {
                let ack = self
                    .jetstream
                    .publish(self.subject(key), value.clone())
                    .await
                    .map_err(|error| self.error("write", key, error))?;
                acks.push((key, ack));
            }
            for (key, ack) in acks {
                let ack = ack.await.map_err(|error| self.error("write", key, error))?;
                revisions.push(ack.sequence);
            }
        }
        Ok(revisions)
    }

    /// An ephemeral consumer of the keys under `filter` (a key pattern:
    /// `a.b.>`, `>`), oldest write first, delivering nothing yet.
    async fn consumer(
        &self,
        filter: &str,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, StoreError> {
        self.kv
            .stream
            .create_consumer(pull::Config {
                filter_subject: self.subject(filter),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                memory_storage: true,
                ..pull::Config::default()
            })
            .await
            .map_err(|error| self.error("scan", filter, error))
    }

    async fn drop_consumer(&self, consumer: &jetstream::consumer::Consumer<pull::Config>) {
        let name = consumer.cached_info().name.clone();
        if let Err(error) = self.kv.stream.delete_consumer(&name).await {
            tracing::debug!(bucket = %self.name, error = %error, "Cannot delete a scan's consumer; the server will.");
        }
    }

    /// How many keys there are under `filter`.
    pub(super) async fn count(&self, filter: &str) -> Result<u64, StoreError> {
        let consumer = self.consumer(filter).await?;
        let count = consumer.cached_info().num_pending;
        self.drop_consumer(&consumer).await;
        Ok(count)
    }

    /// Visits the keys under `filter` with their value and revision, in
    /// the order they were last written, until `visit` breaks.
    pub(super) async fn scan(
        &self,
        filter: &str,
        mut visit: impl FnMut(&str, Bytes, u64) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let consumer = self.consumer(filter).await?;
        let result = async {
            let mut remaining = consumer.cached_info().num_pending;
            while remaining > 0 {
                let mut batch = consumer
                    .fetch()
                    .max_messages(SCAN_BATCH)
                    .messages()
                    .await
                    .map_err(|error| self.error("scan", filter, error))?;
                let mut received = 0;
                while let Some(message) = batch.next().await {
                    let message = message.map_err(|error| self.error("scan", filter, error))?;
                    received += 1;
                    let info = message
                        .info()
                        .map_err(|error| self.error("scan", filter, error))?;
                    remaining = info.pending;
                    let sequence = info.stream_sequence;
                    if is_marker(&message) {
                        continue;
                    }
                    let Some(key) = message.subject.strip_prefix(self.kv.prefix.as_str()) else {
                        continue;
                    };
                    if visit(key, message.payload.clone(), sequence).is_break() {
                        return Ok(());
                    }
                }
                if received == 0 {
                    break;
                }
            }
            Ok(())
        }
        .await;
        self.drop_consumer(&consumer).await;
        result
    }
}

/// A delete or purge marker (this store leaves none, but a person with the
/// `nats` tool might).
fn is_marker(message: &jetstream::Message) -> bool {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get("KV-Operation"))
        .is_some_and(|operation| operation.as_str() != "PUT")
}
