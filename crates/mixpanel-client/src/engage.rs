//! `/engage`: user profile updates (`$set`, `$set_once`, `$add`, `$union`,
//! `$append`, `$remove`, `$unset`, `$delete`), sent in order in requests of
//! at most 2000 updates.
//!
//! Each update carries the project token (`$token`), which is what
//! authenticates it: no `Authorization` header is sent. Requests use
//! `verbose=1`, so that the body says whether the request worked,
//! `strict=1`, so that Mixpanel says which updates it refused, and `ip=0`,
//! so that Mixpanel does not geolocate profiles to this server. `$delete`
//! updates go in requests of their own, without `ip` (Mixpanel's spec has
//! no such parameter for `$delete`, and there is no profile left to
//! geolocate); the order of the updates is kept. Requests are never
//! gzip-compressed: `/engage` does not support it.
//!
//! Refused before sending, as [`FailedUpdate`]s naming the update (its
//! index, `distinct_id` and operation), while the other updates still go:
//! what Mixpanel's OpenAPI spec refuses (an `$add` whose values are not
//! all numbers; a `$union` of no property, or of a value that is not a
//! non-empty list of numbers and strings; an `$unset` of no property) and
//! an update of 1 MB or more (Mixpanel's limit for one update). They are
//! failures of single updates rather than an [`Error`] for the call
//! because they are the caller's data, not the request's: one bad update
//! must not hold back the 1999 others, and an `Err` would leave the
//! caller not knowing which update to fix.
//!
//! Answers, as Mixpanel documents them:
//! - 200 with `{"status":1}` (or a bare `1`): the request's updates were
//!   accepted (without strict mode, a `1` only means that at least one
//!   was valid, hence `strict=1`);
//! - 200 or 400 with `failed_records` (`[{"index", "message", …}]`, as
//!   `/import` answers in strict mode; Mixpanel's spec promises "per-record
//!   error messages" for `/engage` without showing their shape): the listed
//!   updates were refused with Mixpanel's message, the others accepted.
//!   An index written `2.0` is read as 2; an entry that names no update of
//!   the request makes the whole answer unreadable
//!   ([`Error::InvalidResponse`]), see [`crate::strict`];
//! - 200 with `{"status":0,"error":…}` (or a bare `0`) and no
//!   `failed_records`: refused as a whole, although the status says OK;
//!   [`Error::Rejected`] with Mixpanel's message;
//! - 401/403: [`Error::TokenRefused`] (the project token is the only
//!   credential `/engage` takes), not retried; other 4xx, and a 400
//!   without `failed_records`: [`Error::Rejected`];
//! - 413: the request is split in halves and each half is sent again; a
//!   single update refused this way is a failed update;
//! - 429, 5xx, timeouts, connection errors: retried by the transport, then
//!   [`Error::Unavailable`] or [`Error::Transport`].
//!
//! Requests go one after another, and the first error ends the call:
//! updates in earlier requests were applied, later ones were not sent.
//! `$add` and `$append` are not idempotent, so a caller that resends after
//! an error should pass at most 2000 updates per call: then an error covers
//! exactly the updates it was given.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::ser::{Serialize, SerializeMap as _, Serializer};
use serde_json::{Map, Value};
use tracing::Instrument as _;

use crate::strict::RawFailedRecord;
use crate::transport::{HttpRequest, HttpResponse};
use crate::{Client, Credentials, Error};

/// Updates per request; Mixpanel accepts at most 2000.
const MAX_UPDATES_PER_REQUEST: usize = 2000;
/// Bytes of one serialized update; Mixpanel accepts at most 1 MB.
const MAX_UPDATE_BYTES: usize = 1_000_000;
/// Bytes per request body. Mixpanel documents no such limit for `/engage`
/// (2000 updates of 1 MB would be 2 GB): this is `/import`'s 10 MB, and a
/// 413 splits the request further.
const MAX_REQUEST_BYTES: usize = 10_000_000;

/// One change to one user profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileUpdate {
    /// The profile's `$distinct_id`.
    pub distinct_id: String,
    /// What to change.
    pub operation: ProfileOperation,
    /// `$ignore_time`: do not update the profile's `$last_seen`, as a sync
    /// from another system usually should not.
    pub ignore_time: bool,
    /// `$ignore_alias`: with [`ProfileOperation::Delete`] on a duplicate
    /// profile, delete only the duplicate and not the original it aliases.
    pub ignore_alias: bool,
}

/// A profile operation. Property values are JSON as Mixpanel takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileOperation {
    /// `$set`: set or overwrite properties; creates the profile if missing.
    Set(Map<String, Value>),
    /// `$set_once`: set properties only where they are not set yet.
    SetOnce(Map<String, Value>),
    /// `$add`: add numbers (negative to subtract); missing properties start
    /// from 0. Every value must be a number.
    Add(Map<String, Value>),
    /// `$union`: add the values of each array to a list property, without
    /// duplicates. Every value must be an array.
    Union(Map<String, Value>),
    /// `$append`: append a value to a list property, duplicates allowed.
    Append(Map<String, Value>),
    /// `$remove`: remove a value from a list property.
    Remove(Map<String, Value>),
    /// `$unset`: remove these properties.
    Unset(Vec<String>),
    /// `$delete`: delete the whole profile.
    Delete,
}

/// What Mixpanel did with a call's updates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngageResult {
    /// Updates Mixpanel accepted: those of the requests it answered, less
    /// the ones its answer listed as refused.
    pub n_accepted: usize,
    /// Updates refused, by index in the call's slice, ordered by index:
    /// by Mixpanel (its `failed_records`, with its message) or before
    /// sending (what Mixpanel's spec refuses, or too large).
    pub failed: Vec<FailedUpdate>,
    /// HTTP requests made, retries and 413 splits included.
    pub n_requests: u32,
}

/// One update that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedUpdate {
    /// Its position in the call's slice.
    pub index: usize,
    /// Why: Mixpanel's message, or for an update refused before sending,
    /// one naming the update, e.g. `update 3 (distinct_id "cust-1",
    /// $union): property "tags" is an empty list; Mixpanel takes a
    /// non-empty list of numbers and strings`.
    pub message: String,
}

impl ProfileUpdate {
    /// An update of one profile, with `$ignore_time` and `$ignore_alias` off.
    pub fn new(distinct_id: impl Into<String>, operation: ProfileOperation) -> ProfileUpdate {
        ProfileUpdate {
            distinct_id: distinct_id.into(),
            operation,
            ignore_time: false,
            ignore_alias: false,
        }
    }

    /// What Mixpanel's spec refuses in the operation, if anything.
    fn spec_violation(&self) -> Option<String> {
        match &self.operation {
            ProfileOperation::Add(properties) => {
                let (key, _) = properties.iter().find(|(_, value)| !value.is_number())?;
                Some(format!("property {key:?} is not a number"))
            }
            ProfileOperation::Union(properties) => {
                if properties.is_empty() {
                    return Some("no property to union".to_owned());
                }
                properties.iter().find_map(|(key, value)| {
                    let problem = match value.as_array() {
                        None => "is not a list",
                        Some(items) if items.is_empty() => "is an empty list",
                        Some(items)
                            if items
                                .iter()
                                .any(|item| !(item.is_number() || item.is_string())) =>
                        {
                            "holds a value that is neither a number nor a string"
                        }
                        Some(_) => return None,
                    };
                    Some(format!(
                        "property {key:?} {problem}; Mixpanel takes a non-empty list of numbers and strings"
                    ))
                })
            }
            ProfileOperation::Unset(names) if names.is_empty() => {
                Some("no property to unset".to_owned())
            }
            _ => None,
        }
    }

    /// Names the update at `index` in a message about it.
    fn describe(&self, index: usize, problem: &str) -> String {
        format!(
            "update {index} (distinct_id {:?}, {}): {problem}",
            self.distinct_id,
            self.operation.name()
        )
    }
}

impl ProfileOperation {
    /// The operation's name on the wire: `$set`, `$set_once`, `$add`,
    /// `$union`, `$append`, `$remove`, `$unset` or `$delete`.
    pub fn name(&self) -> &'static str {
        match self {
            ProfileOperation::Set(_) => "$set",
            ProfileOperation::SetOnce(_) => "$set_once",
            ProfileOperation::Add(_) => "$add",
            ProfileOperation::Union(_) => "$union",
            ProfileOperation::Append(_) => "$append",
            ProfileOperation::Remove(_) => "$remove",
            ProfileOperation::Unset(_) => "$unset",
            ProfileOperation::Delete => "$delete",
        }
    }
}

/// An update as `/engage` takes it: `{"$token", "$distinct_id", <op>, …}`.
struct WireUpdate<'a> {
    token: &'a str,
    update: &'a ProfileUpdate,
}

impl Serialize for WireUpdate<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let update = self.update;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("$token", self.token)?;
        map.serialize_entry("$distinct_id", &update.distinct_id)?;
        match &update.operation {
            ProfileOperation::Set(properties) => map.serialize_entry("$set", properties)?,
            ProfileOperation::SetOnce(properties) => {
                map.serialize_entry("$set_once", properties)?
            }
            ProfileOperation::Add(properties) => map.serialize_entry("$add", properties)?,
            ProfileOperation::Union(properties) => map.serialize_entry("$union", properties)?,
            ProfileOperation::Append(properties) => map.serialize_entry("$append", properties)?,
            ProfileOperation::Remove(properties) => map.serialize_entry("$remove", properties)?,
            ProfileOperation::Unset(names) => map.serialize_entry("$unset", names)?,
            ProfileOperation::Delete => map.serialize_entry("$delete", &Value::Null)?,
        }
        if update.ignore_time {
            map.serialize_entry("$ignore_time", &true)?;
        }
        if update.ignore_alias {
            map.serialize_entry("$ignore_alias", &true)?;
        }
        map.end()
    }
}

/// Serialized updates bound for one request, each with its index in the
/// call's slice.
#[derive(Debug, Default)]
struct EngageChunk {
    updates: Vec<(usize, Vec<u8>)>,
    n_bytes: usize,
    /// Holds an `$add` or `$append`, which applies twice if sent twice.
    has_cumulative_update: bool,
    /// Holds `$delete` updates only (sent without `ip`); otherwise none.
    is_delete: bool,
}

impl EngageChunk {
    fn body(&self) -> Bytes {
        let mut body = Vec::with_capacity(self.n_bytes + self.updates.len() + 2);
        body.push(b'[');
        for (position, (_, json)) in self.updates.iter().enumerate() {
            if position > 0 {
                body.push(b',');
            }
            body.extend_from_slice(json);
        }
        body.push(b']');
        Bytes::from(body)
    }

    fn push(&mut self, index: usize, json: Vec<u8>, is_cumulative: bool) {
        self.n_bytes += json.len() + 1;
        self.has_cumulative_update |= is_cumulative;
        self.updates.push((index, json));
    }

    /// Whether sending the chunk twice has the same effect as once.
    fn is_idempotent(&self) -> bool {
        !self.has_cumulative_update
    }

    fn has_room_for(&self, n_bytes: usize) -> bool {
        self.updates.len() < MAX_UPDATES_PER_REQUEST
            && self.n_bytes + n_bytes + 2 <= MAX_REQUEST_BYTES
    }

    /// Splits in halves; each half keeps the chunk's cumulative flag, which
    /// errs on the side of not retrying, and its kind.
    fn split(mut self) -> (EngageChunk, EngageChunk) {
        let second = self.updates.split_off(self.updates.len().div_ceil(2));
        let is_cumulative = self.has_cumulative_update;
        let mut first = EngageChunk {
            is_delete: self.is_delete,
            ..EngageChunk::default()
        };
        for (index, json) in self.updates {
            first.push(index, json, is_cumulative);
        }
        let mut rest = EngageChunk {
            is_delete: self.is_delete,
            ..EngageChunk::default()
        };
        for (index, json) in second {
            rest.push(index, json, is_cumulative);
        }
        (first, rest)
    }

    /// The request's URL. `ip=0` keeps Mixpanel from geolocating profiles
    /// to this server; the spec's `$delete` takes no `ip`.
    fn url(&self, ingestion_url: &str) -> String {
        if self.is_delete {
            format!("{ingestion_url}/engage?verbose=1&strict=1")
        } else {
            format!("{ingestion_url}/engage?verbose=1&strict=1&ip=0")
        }
    }
}

impl Client {
    /// Applies profile updates through `/engage`, in order, in requests of
    /// at most 2000 updates. Needs [`crate::ClientBuilder::project_token`]
    /// ([`Error::Config`] otherwise; nothing is sent).
    ///
    /// Updates refused on their own are in [`EngageResult::failed`] and do
    /// not stop the others: those Mixpanel refused (strict mode's
    /// `failed_records`, with its message) and those refused before
    /// sending (what Mixpanel's OpenAPI spec refuses, such as a `$union`
    /// of an empty list or an `$unset` of nothing, and updates of 1 MB or
    /// more), with a message naming the update's index, `distinct_id` and
    /// operation. An `Err` ends the call: the updates of earlier requests
    /// were applied, later ones were not sent. `$add` and `$append` are not
    /// idempotent, so a caller that resends after an error should pass at
    /// most 2000 updates per call.
    pub async fn engage(&self, updates: &[ProfileUpdate]) -> Result<EngageResult, Error> {
        let token = match (&self.inner.project_token, &self.inner.credentials) {
            (Some(token), _) => token,
            (None, Credentials::ProjectToken { token }) => token,
            (None, _) => {
                return Err(Error::Config(
                    "/engage needs the project token: set ClientBuilder::project_token".to_owned(),
                ));
            }
        };
        let span = tracing::info_span!(
            "mixpanel.engage",
            project = self.project_id().unwrap_or("-"),
            n_updates = updates.len(),
        );
        self.engage_chunks(token.expose(), updates)
            .instrument(span)
            .await
            .map(|mut result| {
                for failed in &mut result.failed {
                    failed.message = redact_message(&failed.message, token.expose());
                }
                result
            })
            .map_err(|error| redact(error, token.expose()))
    }

    async fn engage_chunks(
        &self,
        token: &str,
        updates: &[ProfileUpdate],
    ) -> Result<EngageResult, Error> {
        let mut result = EngageResult::default();
        let mut chunks = Vec::new();
        let mut chunk = EngageChunk::default();
        for (index, update) in updates.iter().enumerate() {
            if let Some(problem) = update.spec_violation() {
                result.failed.push(FailedUpdate {
                    index,
                    message: update.describe(index, &problem),
                });
                continue;
            }
            let json = serde_json::to_vec(&WireUpdate { token, update })
                .expect("JSON maps with string keys always serialize");
            if json.len() >= MAX_UPDATE_BYTES {
                let problem = format!(
                    "{} bytes is over Mixpanel's limit of {MAX_UPDATE_BYTES} bytes for one update",
                    json.len()
                );
                result.failed.push(FailedUpdate {
                    index,
                    message: update.describe(index, &problem),
                });
                continue;
            }
            // `$delete`s go in requests of their own (no `ip`), in order.
            let is_delete = matches!(update.operation, ProfileOperation::Delete);
            if !chunk.updates.is_empty()
                && (chunk.is_delete != is_delete || !chunk.has_room_for(json.len()))
            {
                chunks.push(std::mem::take(&mut chunk));
            }
            chunk.is_delete = is_delete;
            let is_cumulative = matches!(
                update.operation,
                ProfileOperation::Add(_) | ProfileOperation::Append(_)
            );
            chunk.push(index, json, is_cumulative);
        }
        if !chunk.updates.is_empty() {
            chunks.push(chunk);
        }
        // Sent first to last; a 413 puts the halves back on top, in order.
        // Depth first, unlike `/import`'s breadth-first splitting: profile
        // updates must reach Mixpanel in the order they were given, events
        // need not.
        chunks.reverse();
        while let Some(chunk) = chunks.pop() {
            let n_unconfirmed =
                chunk.updates.len() + chunks.iter().map(|rest| rest.updates.len()).sum::<usize>();
            if let Err(error) = self.engage_chunk(chunk, &mut chunks, &mut result).await {
                if result.n_accepted > 0 {
                    tracing::warn!(
                        n_accepted = result.n_accepted,
                        n_unconfirmed,
                        error = %redact_message(&error.to_string(), token),
                        "Stopped sending profile updates after some were applied."
                    );
                }
                return Err(error);
            }
        }
        result.failed.sort_by_key(|failed| failed.index);
        tracing::debug!(
            n_accepted = result.n_accepted,
            n_failed = result.failed.len(),
            n_requests = result.n_requests,
            "Sent profile updates."
        );
        Ok(result)
    }

    /// Sends one chunk; a 413 pushes its halves onto `chunks`.
    async fn engage_chunk(
        &self,
        chunk: EngageChunk,
        chunks: &mut Vec<EngageChunk>,
        result: &mut EngageResult,
    ) -> Result<(), Error> {
        let response = self.send_engage(&chunk).await?;
        result.n_requests += response.attempts;
        match response.status {
            StatusCode::PAYLOAD_TOO_LARGE if chunk.updates.len() > 1 => {
                tracing::info!(
                    n_updates = chunk.updates.len(),
                    "Mixpanel refused the profile updates as too large; splitting them."
                );
                let (first, second) = chunk.split();
                chunks.push(second);
                chunks.push(first);
            }
            StatusCode::PAYLOAD_TOO_LARGE => result.failed.push(FailedUpdate {
                index: chunk.updates[0].0,
                message: format!(
                    "Mixpanel refused the update as too large: {}",
                    response.message()
                ),
            }),
            // The body carries no credentials but the project token.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Error::TokenRefused {
                    status: response.status.as_u16(),
                    message: response.message(),
                });
            }
            status if status.is_success() || status == StatusCode::BAD_REQUEST => {
                let refused = read_engage_answer(&response, chunk.updates.len())?;
                result.n_accepted += chunk.updates.len() - refused.len();
                result
                    .failed
                    .extend(refused.into_iter().map(|(position, message)| FailedUpdate {
                        index: chunk.updates[position].0,
                        message,
                    }));
            }
            _ => return Err(response.into_error()),
        }
        Ok(())
    }

    async fn send_engage(&self, chunk: &EngageChunk) -> Result<HttpResponse, Error> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.inner
            .transport
            .send(HttpRequest {
                endpoint: "engage",
                method: Method::POST,
                url: chunk.url(&self.inner.ingestion_url),
                headers,
                body: chunk.body(),
                // $add and $append would apply twice if a request that
                // Mixpanel applied were sent again.
                retry_when_unsure: chunk.is_idempotent(),
            })
            .await
    }
}

/// Reads a 2xx or 400 answer to a request of `n_updates`: the updates
/// Mixpanel refused, by position in the request, each once and in order,
/// with its message; an error when the request was refused as a whole or
/// the answer cannot be read.
fn read_engage_answer(
    response: &HttpResponse,
    n_updates: usize,
) -> Result<Vec<(usize, String)>, Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum EngageAnswer {
        Bare(i64),
        Verbose {
            status: Option<Value>,
            error: Option<String>,
            #[serde(default)]
            failed_records: Vec<Value>,
        },
    }
    let status = response.status.as_u16();
    let is_success = response.status.is_success();
    let invalid = |message: String| Error::InvalidResponse { status, message };
    match serde_json::from_slice::<EngageAnswer>(&response.body) {
        Ok(EngageAnswer::Verbose { failed_records, .. }) if !failed_records.is_empty() => {
            let mut refused = Vec::with_capacity(failed_records.len());
            for entry in failed_records {
                let record = serde_json::from_value::<RawFailedRecord>(entry.clone())
                    .ok()
                    .filter(|record| record.index < n_updates)
                    .ok_or_else(|| {
                        invalid(format!(
                            "/engage listed a failed record that names no update of the request of {n_updates}: {entry}; the other updates may have been applied"
                        ))
                    })?;
                refused.push((
                    record.index,
                    record.message.unwrap_or_else(|| "no message".to_owned()),
                ));
            }
            // An update listed twice failed once.
            refused.sort_by_key(|(position, _)| *position);
            refused.dedup_by_key(|(position, _)| *position);
            Ok(refused)
        }
        _ if !is_success => Err(response.clone().into_error()),
        Ok(EngageAnswer::Bare(1)) => Ok(Vec::new()),
        Ok(EngageAnswer::Verbose {
            status: Some(answer),
            ..
        }) if answer.as_f64() == Some(1.0) => Ok(Vec::new()),
        Ok(EngageAnswer::Bare(0)) => Err(Error::Rejected {
            status,
            message: "Mixpanel answered 0: none of the profile updates was valid".to_owned(),
        }),
        Ok(EngageAnswer::Verbose {
            status: Some(answer),
            error,
            ..
        }) if answer.as_f64() == Some(0.0) => Err(Error::Rejected {
            status,
            message: error.unwrap_or_else(|| "status 0 without an error message".to_owned()),
        }),
        _ => Err(invalid(format!(
            "expected {{\"status\":1}}, {{\"status\":0}} or failed_records from /engage, got {:?}",
            response.message()
        ))),
    }
}

/// Keeps the project token out of Mixpanel's messages, which may quote it.
fn redact(error: Error, token: &str) -> Error {
    let scrub = |message: String| redact_message(&message, token);
    match error {
        Error::Auth { status, message } => Error::Auth {
            status,
            message: scrub(message),
        },
        Error::TokenRefused { status, message } => Error::TokenRefused {
            status,
            message: scrub(message),
        },
        Error::Rejected { status, message } => Error::Rejected {
            status,
            message: scrub(message),
        },
        Error::Unavailable {
            status,
            attempts,
            message,
            retry_after,
        } => Error::Unavailable {
            status,
            attempts,
            message: scrub(message),
            retry_after,
        },
        Error::InvalidResponse { status, message } => Error::InvalidResponse {
            status,
            message: scrub(message),
        },
        other => other,
    }
}

fn redact_message(message: &str, token: &str) -> String {
    if token.is_empty() {
        return message.to_owned();
    }
    message.replace(token, "[redacted]")
}

#[cfg(test)]
mod tests;
