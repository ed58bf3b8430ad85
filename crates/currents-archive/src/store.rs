//! Archives in a local directory or an object store (S3, GCS, Azure Blob
//! Storage): [`ArchiveStore`] lists the objects a [`Prune`] keeps, reads
//! them whole, and writes `serve`'s archived batches.
//!
//! It sits on the `object_store` crate, with each store's usual credential
//! chain read from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`; see
//! [`ArchiveStore::open`]), so `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true`
//! point it at any S3-compatible server. Requests are retried by
//! `object_store` (by default up to 10 times with backoff, for at most
//! three minutes).
//!
//! A listing descends folder by folder (`list_with_delimiter`) only into
//! folders the [`Prune`] keeps, so a pruned folder is never even listed;
//! below the last `event_type=` or `date=` segment it needs to see, it lists
//! the rest of the subtree in one paged call. Up to 16 folders are listed
//! at a time. Objects are read whole into memory: Braze's files are at
//! most about 100 MB (15,000 events, up to 100,000 under load), and a
//! batch of `serve` a few MB.
//!
//! [`ArchiveStore::stats`] counts listing calls, objects listed, read and
//! written, and bytes: the tests prove pruning with it, and a backfill
//! can report it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, ObjectStoreScheme, PutPayload};

use crate::StoreError;
use crate::error::{redact, redact_url};
use crate::layout::{ObjectKind, Prune, Segment, batch_object_key};

/// Folders listed at the same time.
const LIST_CONCURRENCY: usize = 16;

/// The gzip level of archived batches: `serve` compresses every batch it
/// receives, at up to 100,000 events (about 60 MB) a second, so speed comes
/// first: level 1, the fastest, rather than the default 6, which costs
/// several times the CPU for somewhat smaller objects (not measured here).
pub const BATCH_GZIP_LEVEL: u32 = 1;

/// Bodies from this size on are compressed on a blocking thread, so that
/// `put_batch` never holds the async runtime for long.
const BLOCKING_GZIP_BYTES: usize = 256 << 10;

/// An archive: a local directory, or a prefix of an S3, GCS or Azure
/// bucket.
///
/// Keys ([`ArchiveObject::key`], [`ArchiveStore::put`]) are paths inside
/// the directory or the bucket (the container for Azure), prefix included,
/// `/`-separated.
#[derive(Clone)]
pub struct ArchiveStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The location, without user info or query string, for messages.
    location: String,
    stats: Arc<Counters>,
}

/// Shows the location and the counts, never the client: its configuration
/// holds the credentials.
impl std::fmt::Debug for ArchiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveStore")
            .field("location", &self.location)
            .field("prefix", &self.prefix.as_ref())
            .field("stats", &self.stats())
            .finish()
    }
}

/// One archived object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveObject {
    /// Its path in the directory or bucket.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its entity tag, when the store gives one: a backfill that records it
    /// notices an object that changed since.
    pub e_tag: Option<String>,
    /// When it was last written, UNIX milliseconds.
    pub last_modified_ms: i64,
    /// What it holds.
    pub kind: ObjectKind,
}

/// What a listing found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListReport {
    /// The objects kept, each once, sorted by key.
    pub objects: Vec<ArchiveObject>,
    /// Keys of objects in the folders listed that are neither Avro files
    /// nor batches (`_SUCCESS`, checksums, temporary files), sorted: not
    /// read, but counted, so that nothing is left out silently.
    pub skipped_keys: Vec<String>,
}

/// Counts of what an [`ArchiveStore`] did, since it was opened (clones
/// share them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Listing calls: one per folder listed (a store may page each).
    pub list_calls: u64,
    /// Objects the store listed, kept or not.
    pub objects_listed: u64,
    /// Objects read.
    pub objects_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Objects written.
    pub objects_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
}

#[derive(Debug, Default)]
struct Counters {
    list_calls: AtomicU64,
    objects_listed: AtomicU64,
    objects_read: AtomicU64,
    bytes_read: AtomicU64,
    objects_written: AtomicU64,
    bytes_written: AtomicU64,
}

/// One folder's listing.
struct Folder {
    folders: Vec<Path>,
    objects: Vec<ObjectMeta>,
}

impl ArchiveStore {
    /// Opens the archive at `location`:
    ///
    /// - a local directory (`/var/lib/archive`, `./archive`) or a
    ///   `file:///var/lib/archive` URL; it must exist;
    /// - `s3://bucket/prefix` (also `s3a://` and the `https://` forms of
    ///   S3 and Cloudflare R2), with `AmazonS3Builder::from_env`: `AWS_REGION`
    ///   or `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
    ///   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity and
    ///   container credentials, instance metadata, `AWS_ENDPOINT_URL` and
    ///   `AWS_ALLOW_HTTP` for an S3-compatible server;
    /// - `gs://bucket/prefix`, with `GoogleCloudStorageBuilder::from_env`:
    ///   `GOOGLE_SERVICE_ACCOUNT` (a key file), `GOOGLE_APPLICATION_CREDENTIALS`,
    ///   or the metadata server;
    /// - `az://container/prefix` (also `azure://`, `adl://`,
    ///   `abfs[s]://container@account.dfs.core.windows.net/prefix` and
    ///   `https://account.blob.core.windows.net/container/prefix`), with
    ///   `MicrosoftAzureBuilder::from_env`: `AZURE_STORAGE_ACCOUNT_NAME` and
    ///   `AZURE_STORAGE_ACCOUNT_KEY`, a SAS token, a service principal or a
    ///   managed identity.
    pub fn open(location: &str) -> Result<ArchiveStore, StoreError> {
        ArchiveStore::open_with_options(location, &[])
    }

    /// Like [`ArchiveStore::open`], with settings that take precedence over
    /// the environment: `object_store`'s configuration keys for the store,
    /// such as `aws_endpoint`, `aws_allow_http`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key` (S3),
    /// `google_service_account` (GCS), `azure_storage_account_name` (Azure).
    /// An unknown key is an error. A local directory takes none.
    pub fn open_with_options(
        location: &str,
        options: &[(&str, &str)],
    ) -> Result<ArchiveStore, StoreError> {
        if !location.contains("://") {
            return open_directory(location, std::path::Path::new(location), options);
        }
        let shown = redact_url(location);
        let invalid = |detail: String| StoreError::InvalidLocation {
            location: shown.clone(),
            detail,
        };
        let url = url::Url::parse(location).map_err(|error| invalid(error.to_string()))?;
        if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|()| invalid("not a local file path".to_owned()))?;
            return open_directory(&shown, &path, options);
        }
        let (scheme, prefix) = ObjectStoreScheme::parse(&url).map_err(|error| {
            invalid(format!(
                "{} (s3://, gs:// or az:// are read)",
                redact(&error.to_string())
            ))
        })?;
        let open_error = |error: object_store::Error| StoreError::Open {
            location: shown.clone(),
            detail: redact(&error.to_string()),
        };
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                let mut builder = AmazonS3Builder::from_env().with_url(location);
                for (key, value) in options {
                    let key = AmazonS3ConfigKey::from_str(&key.to_ascii_lowercase())
                        .map_err(|_| invalid(format!("unknown S3 setting {key:?}")))?;
                    builder = builder.with_config(key, *value);
                }
                Arc::new(builder.build().map_err(open_error)?)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                let mut builder = GoogleCloudStorageBuilder::from_env().with_url(location);
                for (key, value) in options {
                    let key = GoogleConfigKey::from_str(&key.to_ascii_lowercase())
                        .map_err(|_| invalid(format!("unknown GCS setting {key:?}")))?;
                    builder = builder.with_config(key, *value);
                }
                Arc::new(builder.build().map_err(open_error)?)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                let mut builder = MicrosoftAzureBuilder::from_env().with_url(location);
                for (key, value) in options {
                    let key = AzureConfigKey::from_str(&key.to_ascii_lowercase())
                        .map_err(|_| invalid(format!("unknown Azure setting {key:?}")))?;
                    builder = builder.with_config(key, *value);
                }
                Arc::new(builder.build().map_err(open_error)?)
            }
            _ => {
                return Err(invalid(
                    "not a supported store: use a directory, file://, s3://, gs:// or az://"
                        .to_owned(),
                ));
            }
        };
        Ok(ArchiveStore {
            store,
            prefix,
            location: shown,
            stats: Arc::default(),
        })
    }

    /// The location, as errors show it (no user info, no query string).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The prefix inside the bucket (empty for a directory or a whole bucket).
    pub fn prefix(&self) -> &str {
        self.prefix.as_ref()
    }

    /// What the store did so far.
    pub fn stats(&self) -> StoreStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StoreStats {
            list_calls: load(&self.stats.list_calls),
            objects_listed: load(&self.stats.objects_listed),
            objects_read: load(&self.stats.objects_read),
            bytes_read: load(&self.stats.bytes_read),
            objects_written: load(&self.stats.objects_written),
            bytes_written: load(&self.stats.bytes_written),
        }
    }

    /// Lists the archive's objects under its prefix that `prune` keeps,
    /// descending only into folders it keeps; see the
    /// [module documentation](self).
    pub async fn list(&self, prune: &Prune) -> Result<ListReport, StoreError> {
        let root = (!self.prefix.as_ref().is_empty()).then(|| self.prefix.clone());
        let mut pending = vec![root];
        let mut in_flight = FuturesUnordered::new();
        let mut objects = BTreeMap::new();
        let mut skipped_keys = BTreeSet::new();
        loop {
            while in_flight.len() < LIST_CONCURRENCY {
                let Some(folder) = pending.pop() else { break };
                in_flight.push(self.list_folder(folder, prune));
            }
            let Some(listed) = in_flight.next().await else {
                break;
            };
            let listed = listed?;
            for folder in listed.folders {
                let name = folder.filename().unwrap_or_default();
                if prune.keeps_folder(name) {
                    pending.push(Some(folder));
                }
            }
            for meta in listed.objects {
                let key = meta.location.to_string();
                let Some(kind) = ObjectKind::from_key(&key) else {
                    skipped_keys.insert(key);
                    continue;
                };
                if !prune.keeps_key(&key) {
                    continue;
                }
                let object = ArchiveObject {
                    size: meta.size,
                    e_tag: meta.e_tag,
                    last_modified_ms: meta.last_modified.timestamp_millis(),
                    kind,
                    key: key.clone(),
                };
                objects.insert(key, object);
            }
        }
        Ok(ListReport {
            objects: objects.into_values().collect(),
            skipped_keys: skipped_keys.into_iter().collect(),
        })
    }

    /// Lists one folder: with the delimiter while `prune` may still skip
    /// something below it, else its whole subtree at once.
    async fn list_folder(&self, folder: Option<Path>, prune: &Prune) -> Result<Folder, StoreError> {
        let prefix = folder.as_ref().map(ToString::to_string).unwrap_or_default();
        let list_error = |error: object_store::Error| {
            StoreError::from_store(error, &self.location, &prefix, |detail| StoreError::List {
                location: self.location.clone(),
                prefix: prefix.clone(),
                detail,
            })
        };
        self.stats.list_calls.fetch_add(1, Ordering::Relaxed);
        let listed = if needs_delimiter(folder.as_ref(), prune) {
            let result = self
                .store
                .list_with_delimiter(folder.as_ref())
                .await
                .map_err(list_error)?;
            Folder {
                folders: result.common_prefixes,
                objects: result.objects,
            }
        } else {
            let objects = self
                .store
                .list(folder.as_ref())
                .try_collect()
                .await
                .map_err(list_error)?;
            Folder {
                folders: Vec::new(),
                objects,
            }
        };
        let n_objects = u64::try_from(listed.objects.len()).unwrap_or(u64::MAX);
        self.stats
            .objects_listed
            .fetch_add(n_objects, Ordering::Relaxed);
        Ok(listed)
    }

    /// Reads a listed object whole.
    pub async fn get(&self, object: &ArchiveObject) -> Result<Bytes, StoreError> {
        self.get_key(&object.key).await
    }

    /// Reads the object at `key` whole.
    pub async fn get_key(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = parse_key(key)?;
        let get_error = |error: object_store::Error| {
            StoreError::from_store(error, &self.location, key, |detail| StoreError::Get {
                location: self.location.clone(),
                key: key.to_owned(),
                detail,
            })
        };
        let result = self.store.get(&path).await.map_err(get_error)?;
        let bytes = result.bytes().await.map_err(get_error)?;
        self.stats.objects_read.fetch_add(1, Ordering::Relaxed);
        let n_bytes = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.stats.bytes_read.fetch_add(n_bytes, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Writes `bytes` at `key`, replacing what was there.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = parse_key(key)?;
        let n_bytes = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|error| {
                StoreError::from_store(error, &self.location, key, |detail| StoreError::Put {
                    location: self.location.clone(),
                    key: key.to_owned(),
                    detail,
                })
            })?;
        self.stats.objects_written.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_written
            .fetch_add(n_bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Archives one Custom HTTP connector request body, exactly as received,
    /// gzip-compressed ([`BATCH_GZIP_LEVEL`]), at
    /// [`batch_object_key`]`(prefix, workspace, received_at_ms, body)`;
    /// returns the key. Writing the same body received at the same
    /// millisecond again writes the same object.
    pub async fn put_batch(
        &self,
        workspace: Option<&str>,
        received_at_ms: i64,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let key = batch_object_key(self.prefix.as_ref(), workspace, received_at_ms, &body);
        let gzip_error = |detail: String| StoreError::Put {
            location: self.location.clone(),
            key: key.clone(),
            detail,
        };
        let compressed = if body.len() >= BLOCKING_GZIP_BYTES
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime
                .spawn_blocking(move || gzip(&body))
                .await
                .map_err(|error| gzip_error(error.to_string()))?
        } else {
            gzip(&body)
        }
        .map_err(|error| gzip_error(error.to_string()))?;
        self.put(&key, Bytes::from(compressed)).await?;
        Ok(key)
    }
}

/// Opens a local directory, which must exist.
fn open_directory(
    shown: &str,
    dir: &std::path::Path,
    options: &[(&str, &str)],
) -> Result<ArchiveStore, StoreError> {
    let invalid = |detail: String| StoreError::InvalidLocation {
        location: shown.to_owned(),
        detail,
    };
    if let Some((key, _)) = options.first() {
        return Err(invalid(format!(
            "a directory takes no setting, got {key:?}"
        )));
    }
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => return Err(invalid("not a directory".to_owned())),
        Err(error) => return Err(invalid(format!("{error} (create the directory first)"))),
    }
    let store = LocalFileSystem::new_with_prefix(dir).map_err(|error| StoreError::Open {
        location: shown.to_owned(),
        detail: error.to_string(),
    })?;
    Ok(ArchiveStore {
        store: Arc::new(store),
        prefix: Path::default(),
        location: shown.to_owned(),
        stats: Arc::default(),
    })
}

/// Whether a listing of `folder` must go level by level: when `prune` looks
/// for `event_type=` or `date=` folders and none is on the path yet. A
/// `workspace=` folder (our layout) holds only objects, so below one there
/// is nothing left to prune.
fn needs_delimiter(folder: Option<&Path>, prune: &Prune) -> bool {
    let (mut seen_type, mut seen_date) = (false, false);
    for part in folder.into_iter().flat_map(Path::parts) {
        match Segment::parse(part.as_ref()) {
            Segment::EventType(_) => seen_type = true,
            Segment::Date(_) => seen_date = true,
            Segment::Workspace(_) => return false,
            _ => {}
        }
    }
    (prune.filters_types() && !seen_type) || (prune.filters_time() && !seen_date)
}

fn parse_key(key: &str) -> Result<Path, StoreError> {
    Path::parse(key).map_err(|error| StoreError::InvalidKey {
        key: key.to_owned(),
        detail: error.to_string(),
    })
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let out = Vec::with_capacity(body.len() / 4 + 64);
    let mut encoder =
        flate2::write::GzEncoder::new(out, flate2::Compression::new(BATCH_GZIP_LEVEL));
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests;
