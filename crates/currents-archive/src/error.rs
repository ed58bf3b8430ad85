//! The crate's errors: [`ArchiveError`] for an object's content that cannot
//! be read, [`StoreError`] for a store that cannot be reached or used.
//!
//! Neither prints a secret: locations are shown without user info or query
//! string, and the text of object store errors has the query strings of
//! the URLs it names removed (an Azure SAS token travels in one).

use currents_model::BatchError;

/// Why an archived object's events cannot be read (all or from a point on).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The object has no bytes at all; Braze never writes empty files.
    #[error("empty file")]
    EmptyFile,
    /// The object does not start as an Avro object container file does, or
    /// its header cannot be read.
    #[error("not an Avro object container file: {detail}")]
    NotAvro {
        /// What is wrong.
        detail: String,
    },
    /// The file is compressed with a codec this crate does not read.
    #[error("unsupported Avro codec {codec:?} (null, deflate and snappy are read)")]
    UnsupportedCodec {
        /// The codec the file names.
        codec: String,
    },
    /// The file's schema is not valid Avro, or not a record.
    #[error("invalid Avro schema: {detail}")]
    InvalidSchema {
        /// What is wrong.
        detail: String,
    },
    /// No `event_type=` folder was given and the schema's record name is not
    /// Braze's `dataexport.<store>.inner.<event type>`: the type is never
    /// guessed.
    #[error(
        "cannot tell the event type: no event_type= folder, and the record name {record_name:?} is not dataexport.<store>.inner.<event type>"
    )]
    UnknownEventType {
        /// The schema's record full name.
        record_name: String,
    },
    /// The data is damaged from this record on; the records before it were
    /// read.
    #[error("record {record}: {detail}")]
    Corrupt {
        /// The number of the first record not read, from 0.
        record: u64,
        /// What is wrong.
        detail: String,
    },
    /// A gzip-compressed object cannot be inflated.
    #[error("cannot inflate the gzip data: {detail}")]
    Gzip {
        /// What is wrong.
        detail: String,
    },
    /// An object inflates to more than this crate holds in memory.
    #[error("{what} inflates to more than {max_bytes} bytes")]
    TooLarge {
        /// What inflates: an Avro block, a gzip object.
        what: &'static str,
        /// The limit.
        max_bytes: usize,
    },
    /// A batch object is not UTF-8 text.
    #[error("not UTF-8 text (valid up to byte {valid_up_to})")]
    NotUtf8 {
        /// Bytes of valid UTF-8 before the first invalid one.
        valid_up_to: usize,
    },
    /// A line (or the whole object) of a batch object is not a Currents
    /// envelope; the events of the lines before it were read.
    #[error("line {line} (record {record}): {source}")]
    Envelope {
        /// The line, from 1 (1 when the object is one envelope).
        line: usize,
        /// The number of the first record not read, from 0.
        record: u64,
        /// Why the envelope cannot be read.
        source: BatchError,
    },
}

/// Why an archive store cannot be opened, listed, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The location is not a directory or a URL of a supported store.
    #[error("invalid archive location {location:?}: {detail}")]
    InvalidLocation {
        /// The location, without user info or query string.
        location: String,
        /// What is wrong, and what would be right.
        detail: String,
    },
    /// The store's client cannot be built (a missing region, bucket or
    /// credential setting).
    #[error("cannot open {location}: {detail}")]
    Open {
        /// The location, without user info or query string.
        location: String,
        /// The store client's message.
        detail: String,
    },
    /// Listing a folder failed.
    #[error("cannot list {prefix:?} in {location}: {detail}")]
    List {
        /// The location.
        location: String,
        /// The folder.
        prefix: String,
        /// The store client's message.
        detail: String,
    },
    /// The object does not exist (any more).
    #[error("{key:?} not found in {location}")]
    NotFound {
        /// The location.
        location: String,
        /// The object's key.
        key: String,
    },
    /// Reading an object failed.
    #[error("cannot read {key:?} from {location}: {detail}")]
    Get {
        /// The location.
        location: String,
        /// The object's key.
        key: String,
        /// The store client's message.
        detail: String,
    },
    /// Writing an object failed.
    #[error("cannot write {key:?} to {location}: {detail}")]
    Put {
        /// The location.
        location: String,
        /// The object's key.
        key: String,
        /// The store client's message.
        detail: String,
    },
    /// The store refused the credentials, or their access to `what`.
    #[error(
        "access to {what:?} in {location} refused: {detail} (check the credentials and their permissions)"
    )]
    Denied {
        /// The location.
        location: String,
        /// The object or folder.
        what: String,
        /// The store client's message.
        detail: String,
    },
    /// A key is not a valid object path (empty segments, `.` or `..`,
    /// control characters).
    #[error("invalid object key {key:?}: {detail}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

impl StoreError {
    /// Whether trying again later may succeed: listing, reading or writing
    /// failed after the store client's own retries (a network or server
    /// error). A missing object, refused credentials or a bad location or
    /// key stay as they are.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::List { .. } | StoreError::Get { .. } | StoreError::Put { .. }
        )
    }

    /// The error of an `object_store` call on `what` (a key or a folder):
    /// `NotFound` and `Denied` apart, `other` builds it.
    pub(crate) fn from_store(
        error: object_store::Error,
        location: &str,
        what: &str,
        other: impl FnOnce(String) -> StoreError,
    ) -> StoreError {
        match error {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                location: location.to_owned(),
                key: what.to_owned(),
            },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StoreError::Denied {
                location: location.to_owned(),
                what: what.to_owned(),
                detail: redact(&error.to_string()),
            },
            other_error => other(redact(&other_error.to_string())),
        }
    }
}

/// `text` with the user info and query string of every URL in it removed.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&rest[..start]);
        let url_and_after = &rest[start..];
        let end = url_and_after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')'))
            .unwrap_or(url_and_after.len());
        out.push_str(&redact_url(&url_and_after[..end]));
        rest = &url_and_after[end..];
    }
    out.push_str(rest);
    out
}

/// Where the next `scheme://` begins, the scheme included.
fn find_url(text: &str) -> Option<usize> {
    let separator = text.find("://")?;
    let scheme_start = text[..separator]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .map_or(0, |idx| idx + 1);
    Some(scheme_start)
}

/// One URL without user info and query string; a query becomes `?…`.
pub(crate) fn redact_url(url: &str) -> String {
    let (before_query, had_query) = match url.split_once('?') {
        Some((before, _)) => (before, true),
        None => (url, false),
    };
    let before_query = before_query.split('#').next().unwrap_or(before_query);
    let redacted = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let host = authority.rsplit('@').next().unwrap_or(authority);
            let userinfo = if authority.contains('@') { "…@" } else { "" };
            format!("{scheme}://{userinfo}{host}{path}")
        }
        None => before_query.to_owned(),
    };
    if had_query {
        format!("{redacted}?…")
    } else {
        redacted
    }
}

#[cfg(test)]
mod tests;
