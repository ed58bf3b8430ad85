//! Validation of `[archive]`, `serve`'s archive of the batches it accepts,
//! into an [`ArchiveConfig`].
//!
//! Only the location's form is checked here: a directory, or a URL of a
//! scheme `currents_archive::store::ArchiveStore::open` takes, without user
//! info, query string or fragment. Opening the store would read each
//! store's credentials from the process environment, which the
//! configuration never reads behind its caller's back (`Env`), and would
//! look at the file system: `serve` opens it at start instead, and a
//! location it cannot open stops it there, naming `archive.url`.
//!
//! Credentials never go in the URL (each store reads them from the
//! environment, as its own tools do), so a URL that could carry one (user
//! info, a query string such as an Azure SAS token) is refused, and the
//! message never shows it.

use super::raw::RawArchive;
use super::validate::Context;
use super::{ArchiveConfig, ConfigError, keys};

/// The URL schemes `ArchiveStore::open` takes (its `https://` forms name
/// S3, R2 or Azure hosts; any other host is refused when `serve` opens it).
const SCHEMES: [&str; 10] = [
    "file", "s3", "s3a", "gs", "az", "azure", "adl", "abfs", "abfss", "https",
];

/// What `archive.url` takes, for messages.
const EXPECTED: &str = "a directory, or a file://, s3://, gs:// or az:// URL without user info or query string (credentials come from the environment)";

/// `[archive]`: `None` when `url` is unset, so nothing is archived.
pub(super) fn validate_archive(
    cx: &mut Context<'_>,
    raw: RawArchive,
) -> Result<Option<ArchiveConfig>, ConfigError> {
    let Some(url) = raw.url else { return Ok(None) };
    cx.record(keys::ARCHIVE_URL.key, &url.origin);
    let location = url.value.trim();
    let invalid =
        |found: String| cx.invalid(keys::ARCHIVE_URL.key, Some(&url.origin), EXPECTED, found);
    if location.is_empty() {
        return Err(invalid("an empty string".to_owned()));
    }
    if let Some((scheme, rest)) = location.split_once("://") {
        if !SCHEMES
            .iter()
            .any(|known| known.eq_ignore_ascii_case(scheme))
        {
            return Err(invalid(format!("a URL of scheme {scheme:?}")));
        }
        // `abfs[s]://container@account.dfs.core.windows.net/…` names the
        // container before the `@`; a `:` there would be a password.
        let authority = rest.split('/').next().unwrap_or_default();
        let is_abfs = ["abfs", "abfss"]
            .iter()
            .any(|abfs| abfs.eq_ignore_ascii_case(scheme));
        if let Some((user_info, _)) = authority.rsplit_once('@')
            && (!is_abfs || user_info.contains(':'))
        {
            return Err(invalid("a URL with user info".to_owned()));
        }
        if rest.contains(['?', '#']) {
            return Err(invalid("a URL with a query string or fragment".to_owned()));
        }
    }
    Ok(Some(ArchiveConfig {
        url: location.to_owned(),
    }))
}
