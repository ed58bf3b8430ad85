//! `/import`: sends one batch and reports, per record, what Mixpanel took.
//!
//! Answers, as Mixpanel documents them:
//! - 200: every record imported;
//! - 400 with `failed_records`: a partial success; the listed records failed
//!   for good (each once, even if listed twice), every other record was
//!   imported; never retried;
//! - 400 without usable `failed_records` (refused as a whole, an index
//!   outside the batch, a body that cannot be read): the batch is split in
//!   halves and each half sent again, until the refused record stands
//!   alone and is reported failed with Mixpanel's message; if both halves
//!   of the batch are refused as a whole too, the request itself is at
//!   fault and the answer is an error ([`Error::Rejected`]), not a failed
//!   record per event;
//! - 401/403: [`Error::Auth`], not retried;
//! - 413: the batch is split in halves and each half is sent again; a
//!   single event refused this way is a failed record;
//! - 429, 5xx, timeouts, connection errors: retried by the transport, then
//!   [`Error::Unavailable`] or [`Error::Transport`].

use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use tracing::Instrument as _;

use crate::batch::ImportBatch;
use crate::transport::HttpRequest;
use crate::{Client, Error};

/// What Mixpanel did with one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportResult {
    /// Records Mixpanel imported.
    pub n_imported: usize,
    /// Records Mixpanel refused, by index in the batch, ordered by index.
    pub failed: Vec<FailedRecord>,
    /// HTTP requests made, retries and 413 splits included.
    pub n_requests: u32,
}

/// One record Mixpanel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecord {
    /// Its position in the batch.
    pub index: usize,
    /// Its `$insert_id`, as Mixpanel reported it.
    pub insert_id: Option<String>,
    /// The offending field, e.g. `properties.time`.
    pub field: Option<String>,
    /// Mixpanel's explanation.
    pub message: String,
}

#[derive(Deserialize)]
struct ImportResponse {
    num_records_imported: Option<usize>,
    #[serde(default)]
    failed_records: Vec<RawFailedRecord>,
}

#[derive(Deserialize)]
struct RawFailedRecord {
    index: usize,
    insert_id: Option<String>,
    #[serde(rename = "$insert_id")]
    dollar_insert_id: Option<String>,
    field: Option<String>,
    message: Option<String>,
}

impl Client {
    /// Imports one batch. Records Mixpanel refuses are reported in
    /// [`ImportResult::failed`]; an `Err` means no answer about the batch
    /// could be had (or, after a 413 split, about part of it: resending the
    /// whole batch is safe, since Mixpanel deduplicates on `$insert_id`).
    pub async fn import(&self, batch: &ImportBatch) -> Result<ImportResult, Error> {
        if batch.is_empty() {
            return Ok(ImportResult::default());
        }
        self.import_shared(Arc::new(batch.clone())).await
    }

    /// [`Client::import`] for a batch the caller shares rather than lends,
    /// so that its body is compressed or sent without being copied.
    pub(crate) async fn import_shared(
        &self,
        batch: Arc<ImportBatch>,
    ) -> Result<ImportResult, Error> {
        if batch.is_empty() {
            return Ok(ImportResult::default());
        }
        let span = tracing::info_span!(
            "mixpanel.import",
            project = self.project_id().unwrap_or("-"),
            n_events = batch.len(),
            bytes = batch.body_bytes(),
            status = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        self.import_with_splits(batch).instrument(span).await
    }

    async fn import_with_splits(&self, batch: Arc<ImportBatch>) -> Result<ImportResult, Error> {
        // Breadth first, so that both halves of a refused request are tried
        // before either is split further.
        let mut pending = std::collections::VecDeque::from([(0usize, 0u32, batch)]);
        let mut result = ImportResult::default();
        // Halves of the whole batch refused as a whole: if both are, the
        // request itself is at fault, not a record in it.
        let mut halves_refused_whole = 0;
        while let Some((offset, depth, batch)) = pending.pop_front() {
            let response = self.send_import(&batch).await?;
            result.n_requests += response.attempts;
            let span = tracing::Span::current();
            span.record("status", response.status.as_u16());
            span.record("attempts", response.attempts);
            match response.status {
                StatusCode::PAYLOAD_TOO_LARGE if batch.len() > 1 => {
                    tracing::info!(
                        n_events = batch.len(),
                        "Mixpanel refused the batch as too large; splitting it."
                    );
                    let (first, second) = batch.split();
                    let second_offset = offset + first.len();
                    pending.push_back((offset, depth + 1, Arc::new(first)));
                    pending.push_back((second_offset, depth + 1, Arc::new(second)));
                }
                StatusCode::PAYLOAD_TOO_LARGE => result.failed.push(FailedRecord {
                    index: offset,
                    insert_id: None,
                    field: None,
                    message: format!(
                        "Mixpanel refused the event as too large: {}",
                        response.message()
                    ),
                }),
                status if status.is_success() => {
                    let parsed: Option<ImportResponse> =
                        serde_json::from_slice(&response.body).ok();
                    result.n_imported += parsed
                        .and_then(|body| body.num_records_imported)
                        .unwrap_or(batch.len());
                }
                StatusCode::BAD_REQUEST => {
                    let body = match serde_json::from_slice::<ImportResponse>(&response.body) {
                        Ok(body)
                            if !body.failed_records.is_empty()
                                && body
                                    .failed_records
                                    .iter()
                                    .all(|record| record.index < batch.len()) =>
                        {
                            body
                        }
                        // Refused as a whole, or an answer that cannot be
                        // tied to records: split until the refused record
                        // stands alone, as for a 413, so that one poison
                        // record cannot hold back the others.
                        // Both halves refused too: the request is at fault (a
                        // proxy's error page, a project-level refusal), not
                        // one record; the caller retries or gives up on it.
                        _ if depth == 1 && {
                            halves_refused_whole += 1;
                            halves_refused_whole == 2
                        } =>
                        {
                            return Err(response.into_error());
                        }
                        _ if batch.len() > 1 => {
                            tracing::info!(
                                n_events = batch.len(),
                                "Mixpanel refused the batch as a whole; splitting it to find the refused records."
                            );
                            let (first, second) = batch.split();
                            let second_offset = offset + first.len();
                            pending.push_back((offset, depth + 1, Arc::new(first)));
                            pending.push_back((second_offset, depth + 1, Arc::new(second)));
                            continue;
                        }
                        _ => {
                            result.failed.push(FailedRecord {
                                index: offset,
                                insert_id: None,
                                field: None,
                                message: format!(
                                    "Mixpanel refused the event: {}",
                                    response.message()
                                ),
                            });
                            continue;
                        }
                    };
                    let mut failed_indexes: Vec<usize> = body
                        .failed_records
                        .iter()
                        .map(|record| record.index)
                        .collect();
                    failed_indexes.sort_unstable();
                    failed_indexes.dedup();
                    let n_failed = failed_indexes.len();
                    result.n_imported += body
                        .num_records_imported
                        .unwrap_or(batch.len().saturating_sub(n_failed));
                    for record in body.failed_records {
                        result.failed.push(FailedRecord {
                            index: offset + record.index,
                            insert_id: record.insert_id.or(record.dollar_insert_id),
                            field: record.field,
                            message: record.message.unwrap_or_else(|| "no message".to_owned()),
                        });
                    }
                }
                _ => return Err(response.into_error()),
            }
        }
        result.failed.sort_by_key(|record| record.index);
        // A record listed twice failed once.
        result.failed.dedup_by_key(|record| record.index);
        tracing::debug!(
            n_imported = result.n_imported,
            n_failed = result.failed.len(),
            n_requests = result.n_requests,
            "Imported batch."
        );
        Ok(result)
    }

    async fn send_import(
        &self,
        batch: &Arc<ImportBatch>,
    ) -> Result<crate::transport::HttpResponse, Error> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            self.inner.credentials.authorization(),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = if self.inner.gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            gzip(Arc::clone(batch)).await?
        } else {
            Bytes::from(batch.body())
        };
        self.inner
            .transport
            .send(HttpRequest {
                endpoint: "import",
                method: Method::POST,
                url: self.import_url(),
                headers,
                body,
                // Mixpanel deduplicates on $insert_id: sending twice is harmless.
                retry_when_unsure: true,
            })
            .await
    }
}

/// Compresses the batch's body off the async runtime (a 10 MB body takes
/// tens of milliseconds), reading it in place.
async fn gzip(batch: Arc<ImportBatch>) -> Result<Bytes, Error> {
    let compress = move || {
        let body = batch.body_slice();
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 4),
            flate2::Compression::fast(),
        );
        encoder.write_all(body)?;
        encoder.finish()
    };
    let compressed = tokio::task::spawn_blocking(compress)
        .await
        .map_err(|error| Error::Config(format!("compression task failed: {error}")))?
        .map_err(|error| Error::Config(format!("cannot compress the request: {error}")))?;
    Ok(Bytes::from(compressed))
}
