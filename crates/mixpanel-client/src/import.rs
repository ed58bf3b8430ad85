//! `/import`: sends one batch and reports, per record, what Mixpanel took.
//!
//! Answers, as Mixpanel documents them:
//! - 200: every record imported;
//! - 400 with `failed_records`: a partial success; the listed records failed
//!   for good (each once, even if listed twice), every other record was
//!   imported; never retried;
//! - 400 without usable `failed_records` (refused as a whole, an index
//!   that names no record of the batch, a body that cannot be read; an
//!   index written as an integral float, `2.0`, is read as 2, see
//!   [`crate::strict`]): the batch is split in
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
use crate::strict::RawFailedRecord;
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
    #[serde(default, deserialize_with = "crate::strict::optional_count")]
    num_records_imported: Option<usize>,
    #[serde(default)]
    failed_records: Vec<RawFailedRecord>,
}

/// A 400 that tells which records failed: the others were imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartialRefusal {
    /// Records imported, as Mixpanel counted them (or the request's less
    /// the refused ones, when it did not say).
    pub(crate) n_imported: usize,
    /// The refused records, by index within the request, each once, in
    /// order; never empty.
    pub(crate) failed: Vec<FailedRecord>,
}

/// Reads a 400's body as a partial success of a request of `n_records`;
/// `None` when it cannot be tied to records (no `failed_records`, an index
/// outside the request, not the JSON Mixpanel sends), and the request must
/// be split to find the refused record instead.
pub(crate) fn read_partial_refusal(body: &[u8], n_records: usize) -> Option<PartialRefusal> {
    let body: ImportResponse = serde_json::from_slice(body).ok()?;
    if body.failed_records.is_empty()
        || body
            .failed_records
            .iter()
            .any(|record| record.index >= n_records)
    {
        return None;
    }
    let mut failed: Vec<FailedRecord> = body
        .failed_records
        .into_iter()
        .map(|record| FailedRecord {
            index: record.index,
            insert_id: record.insert_id.or(record.dollar_insert_id),
            field: record.field,
            message: record.message.unwrap_or_else(|| "no message".to_owned()),
        })
        .collect();
    // A record listed twice failed once.
    failed.sort_by_key(|record| record.index);
    failed.dedup_by_key(|record| record.index);
    Some(PartialRefusal {
        n_imported: body
            .num_records_imported
            .unwrap_or(n_records - failed.len()),
        failed,
    })
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
    pub async fn import_shared(&self, batch: Arc<ImportBatch>) -> Result<ImportResult, Error> {
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
                    match read_partial_refusal(&response.body, batch.len()) {
                        Some(refusal) => {
                            result.n_imported += refusal.n_imported;
                            result
                                .failed
                                .extend(refusal.failed.into_iter().map(|record| FailedRecord {
                                    index: offset + record.index,
                                    ..record
                                }));
                        }
                        // Refused as a whole, or an answer that cannot be
                        // tied to records: split until the refused record
                        // stands alone, as for a 413, so that one poison
                        // record cannot hold back the others.
                        // Both halves refused too: the request is at fault (a
                        // proxy's error page, a project-level refusal), not
                        // one record; the caller retries or gives up on it.
                        None if depth == 1 && {
                            halves_refused_whole += 1;
                            halves_refused_whole == 2
                        } =>
                        {
                            return Err(response.into_error());
                        }
                        None if batch.len() > 1 => {
                            tracing::info!(
                                n_events = batch.len(),
                                "Mixpanel refused the batch as a whole; splitting it to find the refused records."
                            );
                            let (first, second) = batch.split();
                            let second_offset = offset + first.len();
                            pending.push_back((offset, depth + 1, Arc::new(first)));
                            pending.push_back((second_offset, depth + 1, Arc::new(second)));
                        }
                        None => {
                            result.failed.push(FailedRecord {
                                index: offset,
                                insert_id: None,
                                field: None,
                                message: format!(
                                    "Mixpanel refused the event: {}",
                                    response.message()
                                ),
                            });
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_refusal_names_each_refused_record_once_in_order() {
        let body = br#"{"num_records_imported":3,"failed_records":[
            {"index":4,"$insert_id":"e","message":"too old"},
            {"index":1,"insert_id":"b","field":"properties.time"},
            {"index":4,"$insert_id":"e","message":"too old"}]}"#;
        let refusal = read_partial_refusal(body, 5).unwrap();
        assert_eq!(refusal.n_imported, 3);
        let indexes: Vec<usize> = refusal.failed.iter().map(|record| record.index).collect();
        assert_eq!(indexes, [1, 4]);
        assert_eq!(refusal.failed[0].insert_id.as_deref(), Some("b"));
        assert_eq!(refusal.failed[0].field.as_deref(), Some("properties.time"));
        assert_eq!(refusal.failed[0].message, "no message");
        assert_eq!(refusal.failed[1].insert_id.as_deref(), Some("e"));
        // Without a count, the others were imported.
        let body = br#"{"failed_records":[{"index":0},{"index":0}]}"#;
        assert_eq!(read_partial_refusal(body, 3).unwrap().n_imported, 2);
    }

    #[test]
    fn a_refusal_that_cannot_be_tied_to_records_asks_for_a_split() {
        for body in [
            &br#"{"error":"Invalid JSON body"}"#[..],
            br#"{"failed_records":[]}"#,
            br#"{"failed_records":[{"index":5}]}"#,
            br#"{"failed_records":[{"index":-1}]}"#,
            // One entry that names no record spoils the answer as a whole:
            // record 1 would otherwise be counted as imported.
            br#"{"failed_records":[{"index":0},{"index":1.5}]}"#,
            b"<html>400</html>",
        ] {
            assert_eq!(
                read_partial_refusal(body, 5),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(read_partial_refusal(br#"{"failed_records":[{"index":4}]}"#, 5).is_some());
    }
}
